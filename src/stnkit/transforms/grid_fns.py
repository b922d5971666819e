"""Affine grids with an analytic parameter gradient (the fast path behind ``affine_grid`` / ``affine_grid3d``).

The forward pass writes ``x * A[:, 0] + y * A[:, 1] + A[:, 2]`` over the separable base coordinates as one
rank-k product (no base grid). The backward pass is the grid-generator half of eq. 6-7 of Jaderberg et al. (2015):
``dL/dA[n, i, j] = sum over the grid of dL/dgrid[n, ..., i] * base_j``, computed as one small matmul that sums the
grid gradient over the slow axes (weighted by 1 and by each slow axis' coordinate) and a tiny reduction against
the fastest axis' coordinates, so no base grid is ever materialised. Autograd through the
broadcast ops instead materialises two full-size products and reduces them; the analytic form is what
``benchmarks/`` measures against. The backward is written in differentiable torch ops, so double backward works.

The plain broadcast functions (``affine_grid_reference`` / ``affine_grid3d_reference``) stay as the reference
the tests compare against, and as the path used while ``torch.compile``/``torch.export`` trace.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from stnkit.grid import base_coords
from stnkit.kernels.ops import in_functorch

__all__ = ["affine_grid3d_reference", "affine_grid_fast", "affine_grid_reference"]


def _is_tracing() -> bool:
    """Return True under ``torch.compile``, ``torch.export`` or ``torch.jit.trace`` (use the reference path)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        if getattr(compiler, "is_exporting", None) is not None and compiler.is_exporting():
            return True
        if getattr(compiler, "is_compiling", None) is not None and compiler.is_compiling():
            return True
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting())


def affine_grid_reference(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    """Broadcast affine grid (N, H, W, 2) of theta (N, 2, 3), differentiated by autograd (the reference)."""
    h, w = size
    x = base_coords(w, align_corners, device=theta.device, dtype=theta.dtype).view(1, 1, w, 1)  # (1, 1, W, 1)
    y = base_coords(h, align_corners, device=theta.device, dtype=theta.dtype).view(1, h, 1, 1)  # (1, H, 1, 1)
    cols = theta.transpose(1, 2).unsqueeze(1).unsqueeze(1)  # (N, 1, 1, 3, 2): column j of A as a row
    # (N, H, W, 2): x * A[:, :, 0] + y * A[:, :, 1] + A[:, :, 2], every term broadcast, no base-grid matmul
    return torch.addcmul(torch.addcmul(cols[..., 2, :], x, cols[..., 0, :]), y, cols[..., 1, :])


def affine_grid3d_reference(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    """Broadcast affine grid (N, D, H, W, 3) of theta (N, 3, 4), differentiated by autograd (the reference)."""
    d, h, w = size
    dev, dt = theta.device, theta.dtype
    x = base_coords(w, align_corners, device=dev, dtype=dt).view(1, 1, 1, w, 1)  # (1, 1, 1, W, 1)
    y = base_coords(h, align_corners, device=dev, dtype=dt).view(1, 1, h, 1, 1)  # (1, 1, H, 1, 1)
    z = base_coords(d, align_corners, device=dev, dtype=dt).view(1, d, 1, 1, 1)  # (1, D, 1, 1, 1)
    cols = theta.transpose(1, 2)[:, None, None, None]  # (N, 1, 1, 1, 4, 3): column j of A as a row
    g = torch.addcmul(cols[..., 3, :], x, cols[..., 0, :])  # (N, 1, 1, W, 3)
    g = torch.addcmul(g, y, cols[..., 1, :])  # (N, 1, H, W, 3)
    return torch.addcmul(g, z, cols[..., 2, :])  # (N, D, H, W, 3)


@functools.lru_cache(maxsize=32)
def _factors(size: tuple[int, ...], align_corners: bool, device: torch.device, dtype: torch.dtype):
    """Return the separable base factors ``(L, C)`` of an output size (cached: they depend on nothing else).

    ``L`` (prod(slow), k): rows ``[1, y(, z)]`` for every point of the flattened slow axes (H, or D*H).
    ``C`` (k*W, k+1): for slot 0 and column w the row ``[x_w, 0(, 0), 1]``, for slot s >= 1 the unit row ``e_s``,
    so that ``(C @ A^T)[s*W + w, i]`` is ``x_w A[i, 0] + A[i, -1]`` (s = 0) or ``A[i, s]``.
    """
    k = len(size)
    with torch.inference_mode(False):  # usable by autograd even when first built under inference_mode
        coords = [base_coords(n, align_corners, device=device, dtype=dtype) for n in size]  # (D,) (H,) (W,)
        if k == 2:
            rows = torch.stack([torch.ones_like(coords[0]), coords[0]], dim=1)  # (H, 2)
        else:
            d, h = size[0], size[1]
            y = coords[1].repeat(d)  # (D*H,): y varies fastest within the slow block
            z = coords[0].repeat_interleave(h)  # (D*H,)
            rows = torch.stack([torch.ones_like(y), y, z], dim=1)  # (D*H, 3)
        w = size[-1]
        cols = torch.zeros(k, w, k + 1, device=device, dtype=dtype)  # (k, W, k+1)
        cols[0, :, 0] = coords[-1]
        cols[0, :, k] = 1.0
        for s in range(1, k):
            cols[s, :, s] = 1.0
        return rows, cols.view(k * w, k + 1)


def _affine_grid_bmm(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    """Grid (N, *size, k) of theta (N, k, k + 1) as ``L @ (C @ A^T)`` over the separable base factors.

    ``grid[n, slow, w, i] = 1 * (x_w A[i, 0] + A[i, -1]) + y * A[i, 1] (+ z * A[i, 2])``. The inner product is
    tiny (N, k*W, k); the outer one writes the grid once with a wide output (the broadcast form iterates a size-2
    innermost axis and ``F.affine_grid`` multiplies a materialised base by a 3x2 matrix; both were 3-5x slower).
    """
    n, k, w = theta.shape[0], theta.shape[1], size[-1]
    rows, cols = _factors(tuple(size), align_corners, theta.device, theta.dtype)
    r = torch.matmul(cols, theta.transpose(1, 2))  # (N, k*W, k) = (N, k, W*k) in memory
    return torch.bmm(rows.expand(n, -1, -1), r.view(n, k, w * k)).view(n, *size, k)  # (N, *size, k)


def _grid_grad_to_theta(grad: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    """Reduce a grid gradient (N, *size, k) against the separable base to the matrix gradient (N, k, k + 1)."""
    n, k, w = grad.shape[0], grad.shape[-1], size[-1]
    rows, cols = _factors(tuple(size), align_corners, grad.device, grad.dtype)
    flat = grad.reshape(n, -1, w * k)  # (N, prod(slow), W*k): slow axes flattened, (w, i) fastest
    sums = torch.bmm(rows.t().expand(n, -1, -1), flat)  # (N, k, W*k): sum over slow axes of g * [1, y(, z)]
    return torch.matmul(sums.view(n, k * w, k).transpose(1, 2), cols)  # (N, k, k + 1): against [x, 1] / e_s


class _AffineGridFn(torch.autograd.Function):
    """theta (N, k, k + 1) -> grid (N, *size, k), k = 2 or 3, with the analytic backward above."""

    @staticmethod
    def forward(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:  # type: ignore[override]
        return _affine_grid_bmm(theta, size, align_corners)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, ctx.size, ctx.align_corners = inputs

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _grid_grad_to_theta(grad, ctx.size, ctx.align_corners), None, None


def affine_grid_fast(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    """Affine grid of theta (N, 2, 3) -> (N, H, W, 2) or (N, 3, 4) -> (N, D, H, W, 3), analytic backward.

    Falls back to the broadcast reference while a tracer (compile/export/jit) is active, so traced graphs contain
    plain ATen ops only, and under ``torch.func`` transforms (grad, vmap), which cannot enter the autograd Function.
    Non-finite parameters give the reference's coordinates (the base-factor product would turn ``inf * 0`` into NaN
    where the reference keeps ``inf``): checked on the host for CPU tensors, selected per sample elsewhere (no
    device synchronisation).
    """
    ref = affine_grid_reference if len(size) == 2 else affine_grid3d_reference
    if _is_tracing() or in_functorch():
        return ref(theta, size, align_corners)
    if theta.device.type == "cpu":
        if bool(torch.isfinite(theta).all()):
            return _AffineGridFn.apply(theta, tuple(size), bool(align_corners))
        return ref(theta, size, align_corners)
    finite = torch.isfinite(theta).flatten(1).all(1).view(-1, *([1] * (len(size) + 1)))
    return torch.where(finite, _AffineGridFn.apply(theta, tuple(size), bool(align_corners)),
                       ref(theta, size, align_corners))
