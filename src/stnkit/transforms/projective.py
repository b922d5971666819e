"""Projective (homography) transform, 8 parameters.

``(x', y', w) = H (x_t, y_t, 1)`` with ``H = [[h11, h12, h13], [h21, h22, h23], [h31, h32, 1]]``; the source point is
``(x' / w, y' / w)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stnkit._checks import check_float, check_tensor, shape_str
from stnkit.grid import base_coords
from stnkit.transforms.base import MatrixTransform

__all__ = ["Projective", "homography_from_points"]

#: Smallest ``|w|`` the perspective division uses. A homography whose ``w`` vanishes at some output point (the
#: point maps to infinity, e.g. the horizon line) gives a finite but far-away source point there (``|x| <= 1/eps``
#: times the numerator), which samples as padding, instead of inf/NaN; the sign of ``w`` is kept.
PERSPECTIVE_EPS = 1e-6


def _divide(num: Tensor, w: Tensor) -> Tensor:
    # |w| clamped to PERSPECTIVE_EPS with its sign kept (w = 0, also -0.0, counts as positive): finite values and
    # gradients; torch.where rather than copysign, which neither ONNX exporter translates
    w_abs = w.abs().clamp_min(PERSPECTIVE_EPS)
    return num / torch.where(w < 0, -w_abs, w_abs)


class Projective(MatrixTransform):
    """Projective transform, 8 parameters ``(h11, h12, h13, h21, h22, h23, h31, h32)`` with ``h33 = 1``.

    With ``h31 = h32 = 0`` it is exactly the affine transform ``[[h11, h12, h13], [h21, h22, h23]]``. Where the
    perspective denominator ``w = h31 x + h32 y + 1`` is (near) zero, ``|w|`` is clamped to ``PERSPECTIVE_EPS`` with
    its sign kept, so the grid stays finite (those points land far outside [-1, 1] and sample as padding).

    Example:
        >>> t = Projective()
        >>> t.grid(t.identity()[None], (3, 3))[0, 0, 0]
        tensor([-0.6667, -0.6667])
    """

    name = "projective"
    num_params = 8

    def _accepted_shapes(self):
        return [(8,), (3, 3)]

    def _flatten_params(self, params: Tensor) -> Tensor:
        if params.ndim == 3:  # (N, 3, 3) homography: normalise so that h33 = 1
            params = _divide(params.reshape(-1, 9)[:, :8], params[:, 2, 2:3])
        return params.reshape(-1, 8)  # (N, 8)

    def _identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def _to_matrix(self, params: Tensor) -> Tensor:
        one = torch.ones_like(params[:, :1])
        return torch.cat([params, one], dim=1).view(-1, 3, 3)  # (N, 3, 3)

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        return _divide(matrix.reshape(-1, 9)[:, :8], matrix[:, 2, 2:3])  # (N, 8)

    def _grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        h, w = size
        x = base_coords(w, align_corners, device=params.device, dtype=params.dtype).view(1, 1, w, 1)  # (1,1,W,1)
        y = base_coords(h, align_corners, device=params.device, dtype=params.dtype).view(1, h, 1, 1)  # (1,H,1,1)
        cols = self._to_matrix(params).transpose(1, 2)[:, None, None]  # (N, 1, 1, 3, 3): column j of H as a row
        xyw = torch.addcmul(torch.addcmul(cols[..., 2, :], x, cols[..., 0, :]), y, cols[..., 1, :])  # (N,H,W,3)
        return _divide(xyw[..., :2], xyw[..., 2:])  # (N, H, W, 2)

    def _transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        m = self._to_matrix(params)  # (N, 3, 3)
        xyw = points @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]  # (N, M, 3)
        return _divide(xyw[..., :2], xyw[..., 2:])  # (N, M, 2)


def homography_from_points(dst_points: Tensor, src_points: Tensor) -> Tensor:
    """Solve for the homographies that map ``dst_points`` to ``src_points`` (batched DLT with ``h33 = 1``).

    Four point pairs give the exact solution (an 8x8 linear solve per sample); more give the linear least-squares
    one. The result plugs into :class:`Projective` as output->source parameters, so pass the points of the output
    (dst) frame first, e.g. the corners of a canvas and where they come from in the input image.

    Args:
        dst_points: output-frame points, shape (N, K, 2) as (x, y), K >= 4, no three of the four collinear.
        src_points: the source points they map to, shape (N, K, 2), same frame convention.

    Returns:
        Parameters (N, 8) ``(h11, h12, h13, h21, h22, h23, h31, h32)``, solved in float64 and returned in the
        inputs' dtype.

    Raises:
        TypeError: non-tensor or non-floating-point points.
        ValueError: shapes other than (N, K, 2) with K >= 4, or mismatched shapes.

    Example:
        >>> dst = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
        >>> h = homography_from_points(dst, 0.5 * dst + 0.25)
        >>> h.shape, bool(torch.allclose(Projective().transform_points(h, dst), 0.5 * dst + 0.25))
        (torch.Size([1, 8]), True)
    """
    for name, pts in (("dst_points", dst_points), ("src_points", src_points)):
        check_tensor(pts, name)
        check_float(pts, name)
        if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] < 4:
            raise ValueError(f"{name} must have shape (N, K, 2) with K >= 4; got {shape_str(pts)}")
    if dst_points.shape != src_points.shape:
        raise ValueError(f"dst_points and src_points must have the same shape; got {shape_str(dst_points)} and "
                         f"{shape_str(src_points)}")
    dst, src = dst_points.double(), src_points.double()
    x, y = dst.unbind(-1)  # each (N, K)
    u, v = src.unbind(-1)  # each (N, K)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # u = (h11 x + h12 y + h13) / (h31 x + h32 y + 1)  ->  linear in h; same for v
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)  # (N, K, 8)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)  # (N, K, 8)
    a = torch.cat([rows_u, rows_v], dim=1)  # (N, 2K, 8)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)  # (N, 2K, 1)
    if a.shape[1] == 8:
        h = torch.linalg.solve(a, b)  # (N, 8, 1)
    else:  # normal equations of the least-squares DLT (well conditioned for normalised coordinates)
        at = a.transpose(1, 2)  # (N, 8, 2K)
        h = torch.linalg.solve(at @ a, at @ b)  # (N, 8, 1)
    return h.squeeze(-1).to(dst_points.dtype)  # (N, 8)
