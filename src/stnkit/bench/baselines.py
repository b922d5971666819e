"""The alternatives stnkit is timed against, each a function of the same inputs stnkit gets.

* ``eager``: ``F.affine_grid`` + ``F.grid_sample`` (the PyTorch tutorial's STN), 2-D and 3-D; for projective
  warps the same recipe with a materialised homogeneous base grid and the perspective division.
* ``kornia``: ``warp_affine`` / ``warp_perspective`` (pixel-frame ``dst_from_src`` matrices, converted from the
  same normalised parameters, so outputs agree), ``get_tps_transform`` + ``warp_image_tps``. kornia's spline puts
  its kernel centres at the source points (stnkit and the paper at the output-frame control points), so its TPS
  output differs from stnkit's; its work per call (solve + basis + sample) is what is timed.
* ``compile``: ``torch.compile`` of the ``eager`` function (matrix ops; the CUDA rows: Inductor's fusion of the pair).
* ``sampler only``: ``F.grid_sample`` on a grid built outside the timing: the floor of every grid-then-sample path.
* ``tps-plain``: the OCR-rectifier/Lasagne TPS: inverse system and output basis precomputed once, per call
  ``coefficients = inverse @ [y; 0]``, ``grid = basis @ coefficients`` (broadcast over the batch), grid_sample.
* ``tps-solve``: a straightforward TPS that builds and solves the system and the basis on every call.

kornia is imported lazily; ``kornia_available()`` says whether those baselines can run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from stnkit.grid import denormalize_matrix, identity_grid
from stnkit.transforms import ThinPlateSpline

__all__ = ["kornia_available", "make_baseline"]


def kornia_available() -> bool:
    """Return whether kornia can be imported (a dev/bench dependency only)."""
    return importlib.util.find_spec("kornia") is not None


def _homogeneous(theta: Tensor) -> Tensor:
    """(N, 2, 3) -> (N, 3, 3) with last row (0, 0, 1)."""
    last = torch.zeros(theta.shape[0], 1, 3, dtype=theta.dtype, device=theta.device)
    last[:, 0, 2] = 1.0
    return torch.cat([theta, last], dim=1)


def _attention_theta(p: Tensor) -> Tensor:
    s, tx, ty = p.unbind(-1)
    zero = torch.zeros_like(s)
    return torch.stack([s, zero, tx, zero, s, ty], dim=-1).view(-1, 2, 3)  # (N, 2, 3)


def _radial(points: Tensor, centres: Tensor) -> Tensor:
    """[U(|p - c_k|)..., 1, x, y] with U(r) = r^2 log r^2, shape (..., M, K + 3)."""
    r2 = (points.unsqueeze(-2) - centres).square().sum(-1)  # (..., M, K)
    u = r2 * torch.log(r2.clamp_min(1e-30))
    return torch.cat([u, torch.ones_like(points[..., :1]), points], dim=-1)


def _tps_system(cp: Tensor) -> Tensor:
    k = cp.shape[0]
    system = torch.zeros(k + 3, k + 3, dtype=cp.dtype, device=cp.device)
    basis = _radial(cp, cp)  # (K, K + 3)
    system[:k] = basis
    system[k:, :k] = basis[:, k:].T
    return system


def _tps_plain(cp: Tensor, size: tuple[int, int], ac: bool) -> Callable[[Tensor, Tensor], Tensor]:
    inverse = torch.linalg.inv(_tps_system(cp.double())).float()[:, : cp.shape[0]]  # (K + 3, K)
    basis = _radial(identity_grid(size, ac, device=cp.device).reshape(-1, 2), cp.float())  # (H*W, K + 3)

    def run(x: Tensor, y: Tensor) -> Tensor:
        coeffs = torch.matmul(inverse, y)  # (N, K + 3, 2)
        grid = torch.matmul(basis, coeffs).view(-1, *size, 2)  # (N, H, W, 2)
        return F.grid_sample(x, grid, align_corners=ac)

    return run


def _tps_solve(cp: Tensor, size: tuple[int, int], ac: bool) -> Callable[[Tensor, Tensor], Tensor]:
    cp = cp.float()

    def run(x: Tensor, y: Tensor) -> Tensor:
        system = _tps_system(cp)
        rhs = torch.cat([y, y.new_zeros(y.shape[0], 3, 2)], dim=1)  # (N, K + 3, 2)
        coeffs = torch.linalg.solve(system, rhs)  # (N, K + 3, 2)
        basis = _radial(identity_grid(size, ac, device=cp.device).reshape(-1, 2), cp)  # (H*W, K + 3)
        grid = torch.matmul(basis, coeffs).view(-1, *size, 2)
        return F.grid_sample(x, grid, align_corners=ac)

    return run


def make_baseline(
    name: str, op: str, in_size: tuple[int, ...], out_size: tuple[int, ...], ac: bool,
    tps: ThinPlateSpline | None = None, device: torch.device | str = "cpu",
) -> Callable[[Tensor, Tensor], Tensor]:
    """Return ``f(x, params) -> output`` for baseline ``name`` of op ``op``; params as stnkit takes them.

    Args:
        name: ``"eager"``, ``"compile"``, ``"sampler only"``, ``"kornia"``, ``"tps-plain"`` or ``"tps-solve"``.
        op: ``"affine"``, ``"attention"``, ``"projective"``, ``"tps16"``, ``"tps64"`` or ``"affine3d"``.
        in_size: spatial size of the input.
        out_size: spatial size of the output.
        ac: align_corners.
        tps: the stnkit transform whose control points the TPS baselines use.
        device: where the inputs live (precomputed grids and bases are built there).

    Returns:
        The callable; raises ``KeyError`` for a combination that does not exist.
    """
    device = torch.device(device)
    if name == "compile" and op in ("affine", "attention", "projective", "affine3d"):
        return cast("Callable[[Tensor, Tensor], Tensor]",
                    torch.compile(make_baseline("eager", op, in_size, out_size, ac, tps, device)))
    if name == "eager":
        if op in ("affine", "attention", "affine3d"):
            rows = 3 if op == "affine3d" else 2

            def to_theta(p: Tensor) -> Tensor:
                return _attention_theta(p) if op == "attention" else p.view(p.shape[0], rows, -1)

            def eager(x: Tensor, p: Tensor) -> Tensor:
                theta = to_theta(p)
                grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *out_size], align_corners=ac)
                return F.grid_sample(x, grid, align_corners=ac)

            return eager
        if op == "projective":
            base = identity_grid(out_size, ac, device=device)  # (1, H, W, 2)
            base = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1).view(1, -1, 3)  # (1, H*W, 3)

            def eager_projective(x: Tensor, p: Tensor) -> Tensor:
                h = torch.cat([p, torch.ones_like(p[:, :1])], dim=1).view(-1, 3, 3)
                xyw = torch.matmul(base, h.transpose(1, 2))  # (N, H*W, 3)
                w = xyw[..., 2:]
                w = torch.copysign(w.abs().clamp_min(1e-6), w)
                grid = (xyw[..., :2] / w).view(-1, *out_size, 2)
                return F.grid_sample(x, grid, align_corners=ac)

            return eager_projective
    if name == "sampler only" and op in ("affine", "affine3d"):
        # F.grid_sample on a grid built once outside the timing (gradients to the input and the grid): the cost
        # floor of any grid-then-sample path, the part no grid speed-up removes
        cache: dict[str, Tensor] = {}

        def sampler_only(x: Tensor, p: Tensor) -> Tensor:
            if "grid" not in cache:
                theta = p.detach().view(p.shape[0], 3 if op == "affine3d" else 2, -1)
                cache["grid"] = F.affine_grid(theta, [x.shape[0], x.shape[1], *out_size], align_corners=ac)
            grid = cache["grid"].requires_grad_(p.requires_grad)  # a leaf: its gradient is computed too
            grid.grad = None
            return F.grid_sample(x, grid, align_corners=ac)

        return sampler_only
    if name == "kornia":
        from kornia.geometry.transform import get_tps_transform, warp_affine, warp_image_tps, warp_perspective

        if op in ("affine", "attention", "projective"):
            warp = warp_perspective if op == "projective" else warp_affine

            def kornia_matrix(x: Tensor, p: Tensor) -> Tensor:
                if op == "projective":
                    m = torch.cat([p, torch.ones_like(p[:, :1])], dim=1).view(-1, 3, 3)
                else:
                    m = _homogeneous(_attention_theta(p) if op == "attention" else p.view(-1, 2, 3))
                px = denormalize_matrix(m, in_size, out_size, ac)  # src_from_dst in pixels
                dst_from_src = torch.linalg.inv(px)
                return warp(x, dst_from_src if op == "projective" else dst_from_src[:, :2],
                            cast("tuple[int, int]", out_size), align_corners=ac)  # 2-D ops: (h, w)

            return kornia_matrix
        if op.startswith("tps") and tps is not None and tuple(in_size) == tuple(out_size):
            cp = tps.control_points.float().to(device)

            def kornia_tps(x: Tensor, p: Tensor) -> Tensor:
                y = p.view(p.shape[0], -1, 2)
                centres = cp.expand_as(y)
                kernel_w, affine_w = get_tps_transform(centres, y)  # solved per call, as kornia is used
                return warp_image_tps(x, y, kernel_w, affine_w, align_corners=ac)

            return kornia_tps
    if name in ("tps-plain", "tps-solve") and op.startswith("tps") and tps is not None:
        make = _tps_plain if name == "tps-plain" else _tps_solve
        run = make(tps.control_points.to(device), (out_size[0], out_size[1]), ac)
        return lambda x, p: run(x, p.view(p.shape[0], -1, 2))
    raise KeyError(f"no baseline {name!r} for op {op!r} at {in_size} -> {out_size}")
