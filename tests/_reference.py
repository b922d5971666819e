"""Independent float64 references written directly from the paper's equations (plain Python loops)."""

from __future__ import annotations

import math

import numpy as np


def centre(i: int, n: int, align_corners: bool) -> float:
    """Normalised coordinate of pixel centre i of n."""
    if n == 1:
        return 0.0
    return 2.0 * i / (n - 1) - 1.0 if align_corners else (2.0 * i + 1.0) / n - 1.0


def to_pixel(v: float, n: int, align_corners: bool) -> float:
    """Normalised coordinate -> pixel coordinate (pixel centre i at i)."""
    return (v + 1.0) * (n - 1) / 2.0 if align_corners else ((v + 1.0) * n - 1.0) / 2.0


def grid_loop(fn, h: int, w: int, align_corners: bool) -> np.ndarray:
    """(H, W, 2) grid of fn(x_t, y_t) -> (x_s, y_s) over the output pixel centres."""
    out = np.zeros((h, w, 2))
    for i in range(h):
        for j in range(w):
            out[i, j] = fn(centre(j, w, align_corners), centre(i, h, align_corners))
    return out


def affine_point(theta, x, y):
    """Eq. 1: (x_s, y_s) = A_theta (x_t, y_t, 1)."""
    a = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    return a @ np.array([x, y, 1.0])


def projective_point(h8, x, y):
    """(x', y', w) = H (x, y, 1); source = (x'/w, y'/w)."""
    hm = np.append(np.asarray(h8, dtype=np.float64), 1.0).reshape(3, 3)
    v = hm @ np.array([x, y, 1.0])
    return v[:2] / v[2]


def tps_point(control, targets, x, y):
    """Thin-plate spline through (control -> targets), solved here from scratch with U(r) = r^2 log r^2."""
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    k = len(c)

    def u(r2):
        return 0.0 if r2 == 0 else r2 * math.log(r2)

    system = np.zeros((k + 3, k + 3))
    for a in range(k):
        for b in range(k):
            system[a, b] = u(float(np.sum((c[a] - c[b]) ** 2)))
        system[a, k:] = [1.0, c[a, 0], c[a, 1]]
        system[k:, a] = [1.0, c[a, 0], c[a, 1]]
    rhs = np.zeros((k + 3, 2))
    rhs[:k] = t
    coef = np.linalg.solve(system, rhs)
    basis = [u((x - c[a, 0]) ** 2 + (y - c[a, 1]) ** 2) for a in range(k)] + [1.0, x, y]
    return np.asarray(basis) @ coef


def bilinear_loop(img: np.ndarray, grid: np.ndarray, align_corners: bool) -> np.ndarray:
    """Eq. 5 with zero padding: V_i = sum_nm U_nm max(0, 1-|x_s - m|) max(0, 1-|y_s - n|). img (C,H,W), grid (h,w,2)."""
    c, h_in, w_in = img.shape
    h, w, _ = grid.shape
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            xs = to_pixel(grid[i, j, 0], w_in, align_corners)
            ys = to_pixel(grid[i, j, 1], h_in, align_corners)
            for n in range(h_in):
                ky = max(0.0, 1.0 - abs(ys - n))
                if ky == 0.0:
                    continue
                for m in range(w_in):
                    kx = max(0.0, 1.0 - abs(xs - m))
                    if kx:
                        out[:, i, j] += img[:, n, m] * kx * ky
    return out


def nearest_loop(img: np.ndarray, grid: np.ndarray, align_corners: bool) -> np.ndarray:
    """Eq. 4 with zero padding: V_i = U at (floor(y_s + 0.5), floor(x_s + 0.5))."""
    c, h_in, w_in = img.shape
    h, w, _ = grid.shape
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            m = math.floor(to_pixel(grid[i, j, 0], w_in, align_corners) + 0.5)
            n = math.floor(to_pixel(grid[i, j, 1], h_in, align_corners) + 0.5)
            if 0 <= m < w_in and 0 <= n < h_in:
                out[:, i, j] = img[:, n, m]
    return out
