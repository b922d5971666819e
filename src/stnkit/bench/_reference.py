"""Switch stnkit to its reference paths for one measurement (bench only; the library has no such switch).

Inside ``reference_paths()``: ``warp``/``SpatialTransformer`` build the grid and call ``F.grid_sample`` (no fused
kernel), affine grids are differentiated by autograd through the broadcast ops, and TPS grids are the broadcast
``M @ (y - c)`` the transform used before its GEMM layout. Used to show what the fast paths buy inside a
training step; the values are the same either way (tests/test_sampling_fast.py, tests/transforms/test_fast_paths.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from stnkit._ext import fused
from stnkit.transforms import _grid_fn, affine, affine3d
from stnkit.transforms.tps import ThinPlateSpline

__all__ = ["reference_paths"]


def _tps_grid_reference(self: ThinPlateSpline, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    h, w = size
    base, m = self.basis((h, w), align_corners, params.dtype)  # (1, H, W, 2), (H*W, K)
    offsets = params.view(-1, self.num_control_points, 2) - self.control_points.to(params.dtype)  # (N, K, 2)
    return torch.matmul(m, offsets).view(-1, h, w, 2) + base  # (N, H, W, 2)


@contextlib.contextmanager
def reference_paths() -> Iterator[None]:
    """Run the enclosed code on stnkit's reference (pre-fast-path) implementations; restores them on exit."""
    saved = (fused.fused_warp, affine._affine_grid_fast, affine3d._affine_grid_fast, ThinPlateSpline._grid)
    fused.fused_warp = lambda *args, **kwargs: None  # type: ignore[assignment]
    affine._affine_grid_fast = _grid_fn._affine_grid_reference  # type: ignore[assignment]
    affine3d._affine_grid_fast = _grid_fn._affine_grid3d_reference  # type: ignore[assignment]
    ThinPlateSpline._grid = _tps_grid_reference  # type: ignore[method-assign]
    try:
        yield
    finally:
        fused.fused_warp, affine._affine_grid_fast, affine3d._affine_grid_fast = saved[:3]
        ThinPlateSpline._grid = saved[3]  # type: ignore[method-assign]  # deliberate: restores the patched method
