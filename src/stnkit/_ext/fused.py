"""Fused grid generator + sampler: the C++ kernel of ``warp.cpp`` behind an autograd Function, and when to use it.

``fused_warp`` returns None whenever the kernel does not apply (not a CPU 4-D input, not bilinear with zeros or
border padding, not an affine-family or projective transform, a tracer or autocast active, or the extension
unavailable); the caller then builds the grid and samples it with ``F.grid_sample`` (the reference path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from stnkit import _ext
from stnkit.transforms._grid_fn import _is_tracing
from stnkit.transforms.affine import _Affine2D
from stnkit.transforms.base import Transform, grid_dtype, no_autocast
from stnkit.transforms.projective import PERSPECTIVE_EPS, Projective

__all__ = ["fused_applies", "fused_warp"]

# Above this many channels the forward pass does not keep d out / d (u, v[, w]) for the backward (it would cost
# 2-3x the output's memory); the backward then recomputes the taps instead (measured equal speed with an input
# gradient, ~25% slower for the matrix gradient alone).
_SAVE_DERIV_MAX_CHANNELS = 16


class _FusedWarpFn(torch.autograd.Function):
    """(input (N, C, H, W), matrix (N, 3, 3)) -> output (N, C, H_out, W_out); grads to both."""

    @staticmethod
    def forward(ctx, input, matrix, size, align_corners, projective, border):  # type: ignore[override]
        module = _ext.load()
        if module is None:  # fused_warp checked it; only reachable by calling this class directly
            raise RuntimeError(f"stnkit C++ extension unavailable: {_ext.build_error()}")
        few = input.shape[1] <= _SAVE_DERIV_MAX_CHANNELS
        save = bool(ctx.needs_input_grad[1] and not ctx.needs_input_grad[0] and few)
        out, deriv = module.forward(input, matrix, size[0], size[1], align_corners, projective, border,
                                    PERSPECTIVE_EPS, save)
        ctx.save_for_backward(input, matrix, deriv if save else input.new_empty(0))
        ctx.flags = (align_corners, projective, border)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        input, matrix, deriv = ctx.saved_tensors
        align_corners, projective, border = ctx.flags
        module = _ext.load()
        grad_in, grad_mat = module.backward(grad_out, input, matrix, deriv, ctx.needs_input_grad[0],
                                            ctx.needs_input_grad[1], align_corners, projective, border,
                                            PERSPECTIVE_EPS)
        return (grad_in if ctx.needs_input_grad[0] else None), (grad_mat if ctx.needs_input_grad[1] else None), \
            None, None, None, None


def _autocast_on(device: torch.device) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_cpu_enabled())


def fused_applies(input: Tensor, transform: Transform, mode: str, padding_mode: str) -> bool:
    """Return whether the fused kernel can compute this warp (without building it)."""
    return (
        input.device.type == "cpu"
        and input.ndim == 4
        and mode == "bilinear"
        and padding_mode in ("zeros", "border")
        and isinstance(transform, (_Affine2D, Projective))
        and not _is_tracing()
        and not _autocast_on(input.device)
    )


def fused_warp(
    input: Tensor, transform: Transform, params: Tensor, size: Sequence[int], mode: str, padding_mode: str,
    align_corners: bool,
) -> Tensor | None:
    """Warp ``input`` (N, C, H, W) by ``params`` (N, P) in one fused pass; None if the kernel does not apply.

    Same dtype rules as the reference path: coordinates in float32 (float64 for float64 params), the sampling in
    the promotion of that and the input's dtype, the output cast back to the input's dtype.
    """
    if not fused_applies(input, transform, mode, padding_mode) or _ext.load() is None:
        return None
    assert isinstance(transform, (_Affine2D, Projective))  # fused_applies checked it; narrows for _to_matrix
    params = transform.check_params(params)
    dtype = torch.promote_types(input.dtype, grid_dtype(params.dtype))
    with no_autocast(params.device):
        matrix = transform._to_matrix(params.to(dtype))  # (N, 3, 3) output -> source, normalised frame
    out = _FusedWarpFn.apply(input.to(dtype), matrix, (int(size[0]), int(size[1])), bool(align_corners),
                             isinstance(transform, Projective), padding_mode == "border")
    return out.to(input.dtype)
