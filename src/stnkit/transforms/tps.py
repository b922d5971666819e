"""Thin-plate-spline transform (Jaderberg et al. 2015, Sec. 3.1; Bookstein 1989).

K control points ``c_k`` sit at fixed places of the output frame; the parameters are the source positions ``y_k``
they map to. The source point of an output point p is ``a0 + a1 x + a2 y + sum_k w_k U(|p - c_k|)`` with
``U(r) = r^2 log r^2``, coefficients from the (K+3)x(K+3) system ``[[K, P], [P^T, 0]] [w; a] = [y; 0]``.
The system depends only on the control points, so its inverse is solved once (float64), and the product of the
output basis with that inverse is cached per output size, so a grid costs one batched matmul.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from stnkit import kernels
from stnkit._checks import check_float, check_tensor, shape_str
from stnkit.grid import identity_grid
from stnkit.transforms.base import Transform

__all__ = ["ThinPlateSpline", "regular_control_points"]

_CACHE_SIZE = 16


def regular_control_points(grid_size: int | Sequence[int] = 4) -> Tensor:
    """Return control points on a regular grid over [-1, 1]^2, row-major (y outer, x inner).

    Args:
        grid_size: points per side, or (rows, cols); each at least 2.

    Returns:
        Tensor of shape (rows * cols, 2) with (x, y), float64.

    Example:
        >>> regular_control_points(2)
        tensor([[-1., -1.],
                [ 1., -1.],
                [-1.,  1.],
                [ 1.,  1.]], dtype=torch.float64)
    """
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    if rows < 2 or cols < 2:
        raise ValueError(f"grid_size must be at least 2 points per side; got {(rows, cols)}")
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, rows, dtype=torch.float64), torch.linspace(-1, 1, cols, dtype=torch.float64),
        indexing="ij",
    )  # each (rows, cols)
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # (rows * cols, 2)


def _radial_basis(points: Tensor, control: Tensor) -> Tensor:
    """Return [U(|p - c_k|)..., 1, x, y], shape (..., M, K + 3), for points (..., M, 2) and control (K, 2)."""
    r2 = (points.unsqueeze(-2) - control).square().sum(-1)  # (..., M, K)
    u = r2 * torch.log(r2.clamp_min(1e-300 if r2.dtype == torch.float64 else 1e-30))  # U(0) = 0 exactly
    ones = torch.ones_like(points[..., :1])
    return torch.cat([u, ones, points], dim=-1)  # (..., M, K + 3)


def _check_control_points(control_points: Tensor) -> Tensor:
    check_tensor(control_points, "control_points")
    check_float(control_points, "control_points")
    if control_points.ndim != 2 or control_points.shape[1] != 2 or control_points.shape[0] < 3:
        raise ValueError(f"control_points must have shape (K, 2) with K >= 3; got {shape_str(control_points)}")
    cp = control_points.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(cp).all()):  # construction-time check, never per forward
        bad = int((~torch.isfinite(cp)).any(1).nonzero()[0, 0])
        raise ValueError(f"control_points must be finite; point {bad} is {cp[bad].tolist()}")
    dist = torch.cdist(cp, cp) + torch.eye(len(cp), dtype=torch.float64) * 1e9  # (K, K), diagonal masked
    if dist.min() < 1e-6:
        i, j = divmod(int(dist.argmin()), len(cp))
        raise ValueError(
            f"control_points must be distinct, but points {i} and {j} coincide at {cp[i].tolist()}: the TPS system "
            f"would be singular"
        )
    p = torch.cat([torch.ones(len(cp), 1, dtype=torch.float64), cp], dim=1)  # (K, 3)
    sv = torch.linalg.svdvals(p)
    if sv[-1] < 1e-6 * sv[0]:
        raise ValueError("control_points are collinear: the TPS system is singular; use points spanning a 2-D area")
    return cp


class ThinPlateSpline(Transform):
    """Thin-plate-spline warp with K control points; parameters are the control points' source positions.

    Args:
        control_points: fixed control points in the normalised output frame, shape (K, 2) as (x, y), distinct and
            not all collinear. Default: a regular grid of ``grid_size`` over [-1, 1]^2 (4x4 = 16 points, the paper).
        grid_size: points per side (or (rows, cols)) of the default regular grid.

    Parameters per sample: ``2K``, the source (x, y) of each control point flattened point by point
    ``(x_1, y_1, x_2, y_2, ...)``, shape (N, 2K) (or (N, K, 2)). The identity is the control points themselves.
    The spline interpolates them exactly and reproduces any affine map of them exactly.

    Example:
        >>> t = ThinPlateSpline()
        >>> t.num_params, t.grid(t.identity()[None], (8, 8)).shape
        (32, torch.Size([1, 8, 8, 2]))
    """

    name = "tps"
    control_points: Tensor

    def __init__(self, control_points: Tensor | None = None, grid_size: int | Sequence[int] = 4) -> None:
        super().__init__()
        cp = regular_control_points(grid_size) if control_points is None else _check_control_points(control_points)
        k = cp.shape[0]
        self.num_params = 2 * k
        system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        basis = _radial_basis(cp, cp)  # (K, K + 3)
        system[:k, :] = basis
        system[k:, :k] = basis[:, k:].T
        if torch.linalg.cond(system) > 1e12:
            raise ValueError("control_points give an ill-conditioned TPS system; spread them out more evenly")
        # float64 buffers (kept float64 by _apply): the spline is solved once; non-persistent, so state_dicts
        # carry no derived tensors and the buffers follow .to(device)
        self.register_buffer("control_points", cp, persistent=False)  # (K, 2)
        self.register_buffer("_inverse", torch.linalg.inv(system)[:, :k].contiguous(), persistent=False)  # (K+3, K)
        # (h, w, ...) -> (base, M) of basis(); ("grid", h, w, ...) -> (base, M, M^T) of _grid_basis()
        self._cache: dict[tuple, tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def num_control_points(self) -> int:
        """K, the number of control points."""
        return self.control_points.shape[0]

    def _apply(self, fn, recurse=True):  # keep the solved system in float64 whatever .half()/.float() does
        super()._apply(fn, recurse)
        self.control_points = self.control_points.to(torch.float64)
        self._inverse = self._inverse.to(torch.float64)
        self._cache = {}
        return self

    def _accepted_shapes(self):
        return [(self.num_params,), (self.num_params // 2, 2)]

    def _identity(self) -> Tensor:
        return self.control_points.reshape(-1)

    def basis(
        self, output_size: Sequence[int], align_corners: bool = False, dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Return the cached ``(base, M)`` for an output size: grid = base + M @ (params - identity).

        The cache holds ordinary tensors even when first filled under ``torch.inference_mode()``, so a transformer
        used for inference first can be trained afterwards.

        Args:
            output_size: (H_out, W_out).
            align_corners: frame convention.
            dtype: dtype of the returned tensors.
            device: device of the returned tensors (default the control points'); the parameters' device when
                called by :meth:`grid`, so a transform on another device than its inputs (or on ``meta``) works.

        Returns:
            ``base`` of shape (1, H_out, W_out, 2), the identity grid; ``M`` of shape (H_out * W_out, K), the output
            basis times the inverse system (computed in float64, then cast).
        """
        h, w = output_size
        device = self.control_points.device if device is None else torch.device(device)
        key = (h, w, bool(align_corners), device, dtype)
        if _is_compiling():  # traced graphs compute it inline (constant-folded), no Python-side cache
            return self._compute_basis(h, w, align_corners, dtype, device)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            hit = self._cache[key] = self._compute_basis(h, w, align_corners, dtype, device)
        return cast("tuple[Tensor, Tensor]", hit)  # a (h, w, ...) key: always a basis() pair

    def _compute_basis(self, h: int, w: int, align_corners: bool, dtype, device) -> tuple[Tensor, Tensor]:
        # outside inference mode: a cached inference tensor could not be saved for a later backward
        with _outside_inference_mode(), torch.no_grad():
            cp, inv = self.control_points.clone(), self._inverse.clone()  # ordinary tensors even if built inside
            base = identity_grid((h, w), align_corners, device=cp.device, dtype=torch.float64)  # (1, H, W, 2)
            m = _radial_basis(base.reshape(-1, 2), cp) @ inv  # (H*W, K)
            return base.to(device, dtype), m.to(device, dtype)

    def _grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        h, w = size
        k = self.num_control_points
        base, _, m_t = self._grid_basis((h, w), align_corners, params.dtype, params.device)  # (1,H*W,2) (K,H*W)
        offsets = params.reshape(-1, k, 2) - self.control_points.to(params.device, params.dtype)  # (N, K, 2)
        # base + M @ (y - c), each sample computed alone so that a row does not depend on the batch it is in
        # (kernels.tps_grid: C++ on CPU, else a wide (2, K) x (K, H*W) bmm; the broadcast (H*W, K) x (K, 2) form
        # was 4-10x slower fwd+bwd). Exact identity grid at identity params (zero offsets).
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # exporters take plain ATen ops only
            flat = torch.bmm(offsets.transpose(1, 2), m_t.expand(offsets.shape[0], -1, -1))  # (N, 2, H*W)
            return (base + flat.transpose(1, 2)).reshape(-1, h, w, 2)  # (N, H, W, 2)
        return kernels.tps_grid(offsets, m_t, base).view(-1, h, w, 2)  # (N, H, W, 2)

    def _reference_grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        h, w = size
        base, m = self.basis((h, w), align_corners, params.dtype, params.device)  # (1, H, W, 2), (H*W, K)
        offsets = params.reshape(-1, self.num_control_points, 2) - self.control_points.to(params.device, params.dtype)
        return torch.matmul(m, offsets).view(-1, h, w, 2) + base  # (N, H, W, 2): the broadcast form

    def _grid_basis(self, output_size: Sequence[int], align_corners: bool, dtype, device
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return the cached ``(base (1, H*W, 2), M (H*W, K), M^T (K, H*W))`` of :meth:`basis`."""
        h, w = output_size
        if _is_compiling():
            base, m = self._compute_basis(h, w, align_corners, dtype, device)
            return base.reshape(1, -1, 2), m, m.t()
        key = ("grid", h, w, bool(align_corners), device, dtype)
        hit = self._cache.get(key)
        if hit is None:
            base, m = self.basis((h, w), align_corners, dtype, device)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            with _outside_inference_mode(), torch.no_grad():
                hit = self._cache[key] = (base.reshape(1, -1, 2), m, m.t().contiguous())
        return cast("tuple[Tensor, Tensor, Tensor]", hit)  # a ("grid", ...) key: always a triple

    def _transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        cp, inv = self.control_points.to(points.device), self._inverse.to(points.device)
        m = _radial_basis(points.double(), cp) @ inv  # (N, M, K)
        offsets = params.reshape(-1, self.num_control_points, 2) - cp.to(params.dtype)  # (N, K, 2)
        return points + torch.matmul(m.to(params.dtype), offsets)  # (N, M, 2)

    def extra_repr(self) -> str:
        return f"num_control_points={self.num_control_points}"


def _outside_inference_mode() -> contextlib.AbstractContextManager:
    """Leave inference mode while building a cache (a no-op otherwise, so compiled graphs never see it)."""
    if _is_compiling() or not torch.is_inference_mode_enabled():  # dynamo cannot trace the inference-mode query
        return contextlib.nullcontext()
    return torch.inference_mode(False)


def _is_compiling() -> bool:
    # also torch.jit.trace (the TorchScript ONNX exporter): it would record the cached basis and the custom
    # Function's output as constants of the first call, a silently wrong graph; traced inline ops are right
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())  # torch < 2.3
