"""Fused warp kernels: matrices (N, 3, 3) in, warped images out, as ``torch.library`` custom ops.

This package sits below :mod:`stnkit.transforms` and imports only torch and :mod:`stnkit.grid`: it takes
output->source matrices in the normalised frame (see :mod:`stnkit.kernels.ops` for the convention), never a
Transform. The ops run through ``torch.compile(fullgraph=True)`` and ``torch.export``, and are exact to second
order (their backward is differentiable). Under ``torch.func`` transforms (grad, vmap), which cannot enter these ops,
the same functions compute the reference composition in plain torch ops.

Per device: on CPU a C++ kernel (built with ninja and the system compiler on first use, cached; see
:mod:`stnkit.kernels.build`), on CUDA the Triton kernels of ``stnkit.kernels.triton_warp`` when present; wherever
those are unavailable, the same op computes the reference composition (grid + ``F.grid_sample``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit.kernels import build, ops

__all__ = ["build_error", "cpu_available", "supports", "tps_grid", "warp_matrix"]

tps_grid = ops.tps_grid


def cpu_available() -> bool:
    """Return whether the C++ CPU kernel is usable (builds it on the first call; False if it cannot be built).

    Example:
        >>> isinstance(cpu_available(), bool)
        True
    """
    return build.load() is not None


def build_error() -> str | None:
    """Return why the C++ CPU kernel is unavailable (None if it loaded or was never requested).

    Example:
        >>> build_error() is None or isinstance(build_error(), str)
        True
    """
    return build.build_error()


def supports(device: torch.device, padding_mode: str, projective: bool = False) -> bool:
    """Return whether :func:`warp_matrix` is the fastest warp here for this padding and family (shape-free).

    CPU: projective warps with zeros or border padding, when the C++ kernel is built (the first call builds it);
    affine-family warps are faster on the grid path (analytic-gradient grid + ``F.grid_sample``: 1.0-1.4x the fused
    kernel, measured side by side in ``benchmarks/RESULTS.md``). CUDA: every matrix warp with zeros, border or
    reflection padding, when the Triton kernels can run. Elsewhere the grid path beats the op's own reference
    composition, so callers take it. While ``torch.compile``/``torch.export`` trace, the op is taken wherever it
    applies (it computes the reference composition where no kernel runs).

    Example:
        >>> supports(torch.device("cpu"), "reflection", projective=True), supports(torch.device("cpu"), "zeros")
        (False, False)
    """
    if device.type == "cpu":
        applies = projective and padding_mode in ("zeros", "border")
    else:
        applies = device.type == "cuda" and padding_mode in ops.PADDINGS
    if not applies or torch.compiler.is_compiling():
        return applies
    return cpu_available() if device.type == "cpu" else ops.triton_kernels() is not None


def warp_matrix(
    input: Tensor, matrix: Tensor, size: Sequence[int], padding_mode: str = "zeros", align_corners: bool = False,
    projective: bool = False, eps: float = 1e-6,
) -> Tensor:
    """Warp ``input`` by output->source matrices in one fused pass (bilinear), differentiable to any order.

    Args:
        input: images (N, C, H_in, W_in), floating point, non-empty H_in and W_in.
        matrix: (N, 3, 3) output->source in the normalised frame, same dtype and device as ``input``.
        size: (H_out, W_out).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        align_corners: frame convention (as ``F.grid_sample``).
        projective: divide by the third homogeneous coordinate (its magnitude clamped to ``eps``, sign kept).
        eps: the clamp of the perspective denominator.

    Returns:
        Output (N, C, H_out, W_out), equal to grid + ``F.grid_sample`` with the same matrices.

    Raises:
        ValueError: a shape, dtype, device or padding_mode that the op does not take.

    Example:
        >>> warp_matrix(torch.rand(2, 1, 8, 8), torch.eye(3).expand(2, 3, 3), (4, 4)).shape
        torch.Size([2, 1, 4, 4])
    """
    if padding_mode not in ops.PADDINGS:
        raise ValueError(f"padding_mode must be one of {ops.PADDINGS}; got {padding_mode!r}")
    if input.ndim != 4 or matrix.ndim != 3 or tuple(matrix.shape[1:]) != (3, 3) or matrix.shape[0] != input.shape[0]:
        raise ValueError(f"warp_matrix takes input (N, C, H, W) and matrix (N, 3, 3); got "
                         f"{tuple(input.shape)} and {tuple(matrix.shape)}")
    if input.dtype != matrix.dtype or input.device != matrix.device:
        raise ValueError(f"input and matrix must share dtype and device; got {input.dtype} on {input.device} and "
                         f"{matrix.dtype} on {matrix.device}")
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(f"expected input to have non-empty spatial dimensions (as F.grid_sample); got "
                         f"{tuple(input.shape)}")
    if ops.in_functorch():  # torch.func.grad / vmap: the reference composition, which they support
        return ops.reference_warp(input, matrix, int(size[0]), int(size[1]), ops.PADDINGS.index(padding_mode),
                                  bool(align_corners), bool(projective), float(eps))
    c = input.shape[1]
    save = bool(torch.is_grad_enabled() and matrix.requires_grad and not input.requires_grad
                and c <= ops.SAVE_DERIV_MAX_CHANNELS)
    out, _ = ops.warp_matrix_op(input.contiguous(), matrix.contiguous(), int(size[0]), int(size[1]),
                                ops.PADDINGS.index(padding_mode), bool(align_corners), bool(projective), float(eps),
                                save)
    return out
