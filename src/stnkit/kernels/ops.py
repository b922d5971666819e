"""The fused warps as ``torch.library`` custom ops: ``stnkit::warp_matrix`` and ``stnkit::tps_grid``.

Each op has a fake (meta) kernel, so ``torch.compile(fullgraph=True)`` and ``torch.export`` trace through it, and a
registered autograd formula whose backward is itself differentiable: when a higher-order graph is requested
(``torch.is_grad_enabled()`` inside the backward, i.e. ``create_graph=True``) the gradients are computed through
the reference composition (grid from the matrix + ``F.grid_sample``, or the TPS basis product) with
``torch.autograd.grad(..., create_graph=True)``; otherwise by the backward op.

Kernels per device: CPU runs the C++ kernel (``build.load()``; zeros/border padding) or, when it is unavailable,
the reference composition in torch ops; CUDA runs the Triton kernels of ``triton_warp`` when they are importable
and ``triton_warp.available()``, else the reference; any other device the reference.

Convention:
    ``matrix`` (N, 3, 3) maps homogeneous output points ``(x, y, 1)`` of the normalised frame (``[-1, 1]``, as
    ``F.grid_sample``, ``align_corners`` as given) to source points ``(u, v, w)``; the source point is ``(u, v)``
    for affine matrices, ``(u, v) / w`` for projective ones, with ``|w|`` clamped to ``eps`` and its sign kept
    (``w = 0`` counts as positive). ``padding``: 0 zeros, 1 border, 2 reflection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stnkit.grid import base_coords
from stnkit.kernels import build

__all__ = [
    "PADDINGS", "in_functorch", "matrix_grid", "matrix_grid_backward", "reference_warp", "tps_grid", "triton_kernels",
    "warp_matrix_op",
]

PADDINGS = ("zeros", "border", "reflection")
# Above this many channels the forward pass does not keep d out / d (u, v[, w]) for the backward (it would cost
# 2-3x the output's memory); the backward then recomputes the taps instead (measured equal speed with an input
# gradient, ~25% slower for the matrix gradient alone).
SAVE_DERIV_MAX_CHANNELS = 16


def _homogeneous(matrix: Tensor, out_h: int, out_w: int, align_corners: bool) -> Tensor:
    """Return ``matrix @ (x, y, 1)`` over the output grid, shape (N, H_out, W_out, 3)."""
    x = base_coords(out_w, align_corners, device=matrix.device, dtype=matrix.dtype).view(1, 1, out_w, 1)
    y = base_coords(out_h, align_corners, device=matrix.device, dtype=matrix.dtype).view(1, out_h, 1, 1)
    cols = matrix.transpose(1, 2)[:, None, None]  # (N, 1, 1, 3, 3): column j of the matrix as a row
    return torch.addcmul(torch.addcmul(cols[..., 2, :], x, cols[..., 0, :]), y, cols[..., 1, :])


def _denominator(w: Tensor, eps: float) -> Tensor:
    w_abs = w.abs().clamp_min(eps)
    return torch.where(w < 0, -w_abs, w_abs)


def matrix_grid(
    matrix: Tensor, out_h: int, out_w: int, align_corners: bool, projective: bool, eps: float
) -> Tensor:
    """Return the sampling grid (N, H_out, W_out, 2) of output->source matrices (N, 3, 3) (differentiable).

    Example:
        >>> matrix_grid(torch.eye(3)[None], 2, 3, False, False, 1e-6).shape
        torch.Size([1, 2, 3, 2])
    """
    uvw = _homogeneous(matrix, out_h, out_w, align_corners)  # (N, H, W, 3)
    if not projective:
        return uvw[..., :2]
    return uvw[..., :2] / _denominator(uvw[..., 2:], eps)


def matrix_grid_backward(
    grad_grid: Tensor, matrix: Tensor, align_corners: bool, projective: bool, eps: float
) -> Tensor:
    """Return the matrix gradient (N, 3, 3) of a grid gradient (N, H_out, W_out, 2) (chain rule of matrix_grid).

    Example:
        >>> matrix_grid_backward(torch.ones(1, 2, 3, 2), torch.eye(3)[None], False, False, 1e-6)[0, :2, 2]
        tensor([6., 6.])
    """
    out_h, out_w = grad_grid.shape[1], grad_grid.shape[2]
    x = base_coords(out_w, align_corners, device=matrix.device, dtype=matrix.dtype).view(1, out_w).expand(out_h, out_w)
    y = base_coords(out_h, align_corners, device=matrix.device, dtype=matrix.dtype).view(out_h, 1).expand(out_h, out_w)
    points = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (H, W, 3)
    if projective:
        w = _homogeneous(matrix, out_h, out_w, align_corners)[..., 2:]  # (N, H, W, 1)
        d = _denominator(w, eps)
        src = matrix_grid(matrix, out_h, out_w, align_corners, True, eps)  # (N, H, W, 2)
        g_uv = grad_grid / d
        g_w = -(grad_grid * src).sum(-1, keepdim=True) / d * (w.abs() > eps).to(d.dtype)  # clamp passes nothing
        rows = torch.cat([g_uv, g_w], dim=-1)  # (N, H, W, 3)
    else:
        rows = torch.cat([grad_grid, torch.zeros_like(grad_grid[..., :1])], dim=-1)
    return torch.einsum("nhwk,hwj->nkj", rows, points.to(rows.dtype))


def reference_warp(
    input: Tensor, matrix: Tensor, out_h: int, out_w: int, padding: int, align_corners: bool, projective: bool,
    eps: float,
) -> Tensor:
    """Return the warp (N, C, H_out, W_out) as grid + ``F.grid_sample`` (the reference; differentiable).

    Example:
        >>> reference_warp(torch.rand(1, 2, 4, 4), torch.eye(3)[None], 3, 3, 0, False, False, 1e-6).shape
        torch.Size([1, 2, 3, 3])
    """
    grid = matrix_grid(matrix, out_h, out_w, align_corners, projective, eps)
    return F.grid_sample(input, grid, mode="bilinear", padding_mode=PADDINGS[padding], align_corners=align_corners)


def triton_kernels():
    """Return the Triton kernels module when usable on this machine, else None (then the reference path runs).

    Example:
        >>> triton_kernels() is None or hasattr(triton_kernels(), "warp_matrix_forward")
        True
    """
    try:
        from stnkit.kernels import triton_warp
    except ImportError:
        return None
    return triton_warp if triton_warp.available() else None


def in_functorch() -> bool:
    """Return whether a ``torch.func`` transform (grad, vmap, ...) is active; it cannot enter these custom ops.

    Under such a transform the callers run the reference composition (plain torch ops), which it supports.
    """
    if torch.compiler.is_compiling():
        return False
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # pragma: no cover - torch without functorch
        return False


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


@torch.library.custom_op("stnkit::warp_matrix", mutates_args=())
def warp_matrix_op(
    input: Tensor, matrix: Tensor, out_h: int, out_w: int, padding: int, align_corners: bool, projective: bool,
    eps: float, save_deriv: bool,
) -> tuple[Tensor, Tensor]:
    """Return ``(output (N, C, H_out, W_out), deriv)``; ``deriv`` is what the CPU kernel saves for its backward.

    ``deriv`` is d output / d (u, v[, w]) (N, C, 2 or 3, H_out, W_out) when ``save_deriv`` and the CPU kernel ran,
    else empty. This default implementation (devices without a kernel) is the reference composition.
    """
    with torch.no_grad():
        return reference_warp(input, matrix, out_h, out_w, padding, align_corners, projective, eps), _empty(input)


@warp_matrix_op.register_kernel("cpu")
def _warp_matrix_cpu(input, matrix, out_h, out_w, padding, align_corners, projective, eps, save_deriv):
    module = build.load()
    if module is None or padding == 2:
        return reference_warp(input, matrix, out_h, out_w, padding, align_corners, projective, eps), _empty(input)
    out, deriv = module.forward(input, matrix, out_h, out_w, align_corners, projective, padding == 1, eps,
                                save_deriv)
    return out, (deriv if save_deriv else _empty(input))


@warp_matrix_op.register_kernel("cuda")
def _warp_matrix_cuda(input, matrix, out_h, out_w, padding, align_corners, projective, eps, save_deriv):
    triton_warp = triton_kernels()
    if triton_warp is not None:  # the Triton kernels (kernels/triton_warp.py)
        out = triton_warp.warp_matrix_forward(input, matrix, out_h, out_w, padding, align_corners, projective, eps)
        return out, _empty(input)
    return reference_warp(input, matrix, out_h, out_w, padding, align_corners, projective, eps), _empty(input)


@warp_matrix_op.register_fake
def _warp_matrix_fake(input, matrix, out_h, out_w, padding, align_corners, projective, eps, save_deriv):
    n, c = input.shape[0], input.shape[1]
    out = input.new_empty(n, c, out_h, out_w)
    if save_deriv and input.device.type == "cpu" and padding != 2:
        return out, input.new_empty(n, c, 3 if projective else 2, out_h, out_w)
    return out, _empty(input)


@torch.library.custom_op("stnkit::warp_matrix_backward", mutates_args=())
def warp_matrix_backward_op(
    grad_out: Tensor, input: Tensor, matrix: Tensor, deriv: Tensor, padding: int, align_corners: bool,
    projective: bool, eps: float, need_input: bool, need_matrix: bool,
) -> tuple[Tensor, Tensor]:
    """Return ``(grad_input or empty, grad_matrix or empty)`` of :func:`warp_matrix_op` (reference default)."""
    return _warp_matrix_backward_reference(grad_out, input, matrix, padding, align_corners, projective, eps,
                                           need_input, need_matrix)


def _warp_matrix_backward_reference(grad_out, input, matrix, padding, align_corners, projective, eps, need_input,
                                    need_matrix):
    grid = matrix_grid(matrix, grad_out.shape[2], grad_out.shape[3], align_corners, projective, eps)
    grad_in, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
        grad_out, input, grid, 0, padding, align_corners, [need_input, need_matrix])
    grad_mat = matrix_grid_backward(grad_grid, matrix, align_corners, projective, eps) if need_matrix else None
    return (grad_in if need_input else _empty(input)), (grad_mat if need_matrix else _empty(matrix))


@warp_matrix_backward_op.register_kernel("cpu")
def _warp_matrix_backward_cpu(grad_out, input, matrix, deriv, padding, align_corners, projective, eps, need_input,
                              need_matrix):
    module = build.load()
    if module is None or padding == 2:
        return _warp_matrix_backward_reference(grad_out, input, matrix, padding, align_corners, projective, eps,
                                               need_input, need_matrix)
    grad_in, grad_mat = module.backward(grad_out, input, matrix, deriv, need_input, need_matrix, align_corners,
                                        projective, padding == 1, eps)
    return (grad_in if need_input else _empty(input)), (grad_mat if need_matrix else _empty(matrix))


@warp_matrix_backward_op.register_kernel("cuda")
def _warp_matrix_backward_cuda(grad_out, input, matrix, deriv, padding, align_corners, projective, eps, need_input,
                               need_matrix):
    triton_warp = triton_kernels()
    if triton_warp is None:
        return _warp_matrix_backward_reference(grad_out, input, matrix, padding, align_corners, projective, eps,
                                               need_input, need_matrix)
    # the Triton kernels (kernels/triton_warp.py)
    grad_in, grad_mat = triton_warp.warp_matrix_backward(
        grad_out, input, matrix, grad_out.shape[2], grad_out.shape[3], padding, align_corners, projective, eps,
        need_input, need_matrix)
    return (grad_in if grad_in is not None else _empty(input)), (grad_mat if grad_mat is not None else _empty(matrix))


@warp_matrix_backward_op.register_fake
def _warp_matrix_backward_fake(grad_out, input, matrix, deriv, padding, align_corners, projective, eps, need_input,
                               need_matrix):
    return (torch.empty_like(input) if need_input else _empty(input)), \
        (torch.empty_like(matrix) if need_matrix else _empty(matrix))


def _warp_setup(ctx, inputs, output) -> None:
    input, matrix, _, _, padding, align_corners, projective, eps, _ = inputs
    ctx.save_for_backward(input, matrix, output[1])
    ctx.options = (padding, align_corners, projective, eps)


def _warp_backward(ctx, grad_out, _grad_deriv):
    input, matrix, deriv = ctx.saved_tensors
    padding, align_corners, projective, eps = ctx.options
    need_input, need_matrix = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, through the reference
        wrt = [t for t, need in ((input, need_input), (matrix, need_matrix)) if need]
        with torch.enable_grad():
            out = reference_warp(input, matrix, grad_out.shape[2], grad_out.shape[3], padding, align_corners,
                                 projective, eps)
            grads = list(torch.autograd.grad(out, wrt, grad_out, create_graph=True, allow_unused=True))
        grad_in = grads.pop(0) if need_input else None
        grad_mat = grads.pop(0) if need_matrix else None
    else:
        grad_in, grad_mat = warp_matrix_backward_op(grad_out.contiguous(), input, matrix, deriv, padding,
                                                    align_corners, projective, eps, need_input, need_matrix)
    return (grad_in if need_input else None), (grad_mat if need_matrix else None), \
        None, None, None, None, None, None, None


warp_matrix_op.register_autograd(_warp_backward, setup_context=_warp_setup)


@torch.library.custom_op("stnkit::tps_grid", mutates_args=())
def tps_grid_op(offsets: Tensor, m_t: Tensor, base: Tensor) -> Tensor:
    """Return ``base + M @ offsets`` (N, P, 2) of offsets (N, K, 2), ``M^T`` (K, P), base (1, P, 2).

    Each sample is computed on its own (a row never depends on the batch it is in); the default implementation is
    one (2, K) x (K, P) bmm per sample.
    """
    return _tps_grid_reference(offsets, m_t, base)


def _tps_grid_reference(offsets: Tensor, m_t: Tensor, base: Tensor) -> Tensor:
    n = offsets.shape[0]
    flat = torch.bmm(offsets.transpose(1, 2), m_t.expand(n, -1, -1))  # (N, 2, P)
    out = torch.empty(n, m_t.shape[1], 2, device=m_t.device, dtype=flat.dtype)  # contiguous (N, P, 2)
    return torch.add(base, flat.transpose(1, 2), out=out)


@tps_grid_op.register_kernel("cpu")
def _tps_grid_cpu(offsets, m_t, base):
    module = build.load() if offsets.dtype in (torch.float32, torch.float64) else None
    if module is None:
        return _tps_grid_reference(offsets, m_t, base)
    return module.tps_grid_forward(offsets.contiguous(), m_t.contiguous(), base.contiguous())


@tps_grid_op.register_fake
def _tps_grid_fake(offsets, m_t, base):
    return offsets.new_empty(offsets.shape[0], m_t.shape[1], 2)


@torch.library.custom_op("stnkit::tps_grid_backward", mutates_args=())
def tps_grid_backward_op(grad: Tensor, m_t: Tensor) -> Tensor:
    """Return ``M^T @ grad`` (N, K, 2) of a grid gradient (N, P, 2), per sample."""
    return _tps_grid_backward_reference(grad, m_t)


def _tps_grid_backward_reference(grad: Tensor, m_t: Tensor) -> Tensor:
    # (N, 2, P) x (P, K): the transposed gradient is read in place, no copy
    return torch.bmm(grad.transpose(1, 2), m_t.t().expand(grad.shape[0], -1, -1)).transpose(1, 2)


@tps_grid_backward_op.register_kernel("cpu")
def _tps_grid_backward_cpu(grad, m_t):
    module = build.load() if grad.dtype in (torch.float32, torch.float64) else None
    if module is None:
        return _tps_grid_backward_reference(grad, m_t)
    return module.tps_grid_backward(grad.contiguous(), m_t.contiguous())


@tps_grid_backward_op.register_fake
def _tps_grid_backward_fake(grad, m_t):
    return grad.new_empty(grad.shape[0], m_t.shape[0], 2)


def _tps_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])


def _tps_backward(ctx, grad):
    (m_t,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the differentiable torch-op form
        return _tps_grid_backward_reference(grad, m_t), None, None
    return tps_grid_backward_op(grad, m_t), None, None


tps_grid_op.register_autograd(_tps_backward, setup_context=_tps_setup)


def tps_grid(offsets: Tensor, m_t: Tensor, base: Tensor) -> Tensor:
    """Return the TPS grid ``base + M @ offsets`` (N, P, 2); gradient to ``offsets`` only.

    Args:
        offsets: (N, K, 2), control-point source positions minus the control points.
        m_t: (K, P), the transposed output basis times the inverse TPS system (a constant).
        base: (1, P, 2), the identity grid (a constant).

    Example:
        >>> tps_grid(torch.zeros(2, 4, 2), torch.rand(4, 6), torch.zeros(1, 6, 2)).shape
        torch.Size([2, 6, 2])
    """
    if in_functorch():  # differentiable torch ops (no out=)
        flat = torch.bmm(offsets.transpose(1, 2), m_t.expand(offsets.shape[0], -1, -1))  # (N, 2, P)
        return base + flat.transpose(1, 2)
    return tps_grid_op(offsets, m_t, base)
