"""Float64 loops written from the definition of a field warp: output voxel p reads the input at p + d(p)."""

from __future__ import annotations

import itertools

import numpy as np


def centre(i: int, n: int, align_corners: bool) -> float:
    """Normalised coordinate of voxel centre i of n."""
    if n == 1:
        return 0.0
    return 2.0 * i / (n - 1) - 1.0 if align_corners else (2.0 * i + 1.0) / n - 1.0


def to_voxel(v: float, n: int, align_corners: bool) -> float:
    """Normalised coordinate -> voxel coordinate (voxel centre i at i)."""
    return (v + 1.0) * (n - 1) / 2.0 if align_corners else ((v + 1.0) * n - 1.0) / 2.0


def linear_read(img: np.ndarray, pos: list[float]) -> np.ndarray:
    """N-linear interpolation of img (C, *spatial) at voxel position pos, zero outside."""
    base = [int(np.floor(p)) for p in pos]
    out = np.zeros(img.shape[0])
    for corner in itertools.product((0, 1), repeat=len(pos)):
        idx = [b + c for b, c in zip(base, corner)]
        if any(k < 0 or k >= n for k, n in zip(idx, img.shape[1:])):
            continue
        weight = np.prod([1.0 - abs(p - k) for p, k in zip(pos, idx)])
        out += weight * img[(slice(None), *idx)]
    return out


def warp_loop(img: np.ndarray, field: np.ndarray, units: str, order: str, align_corners: bool) -> np.ndarray:
    """Warp img (C, *spatial_in) by field (d, *spatial_out); bilinear/trilinear, zero padding."""
    d = field.shape[0]
    spatial_out, spatial_in = field.shape[1:], img.shape[1:]
    out = np.zeros((img.shape[0], *spatial_out))
    for p in itertools.product(*(range(n) for n in spatial_out)):
        disp = field[(slice(None), *p)]
        disp = disp if order == "ij" else disp[::-1]  # now along spatial axes 0, 1[, 2]
        pos = []
        for axis in range(d):
            own = centre(p[axis], spatial_out[axis], align_corners)
            if units == "normalized":
                pos.append(to_voxel(own + disp[axis], spatial_in[axis], align_corners))
            else:
                pos.append(to_voxel(own, spatial_in[axis], align_corners) + disp[axis])
        out[(slice(None), *p)] = linear_read(img, pos)
    return out
