"""Projective (homography) transform, 8 parameters.

``(x', y', w) = H (x_t, y_t, 1)`` with ``H = [[h11, h12, h13], [h21, h22, h23], [h31, h32, 1]]``; the source point is
``(x' / w, y' / w)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stnkit.grid import base_coords
from stnkit.transforms.base import MatrixTransform

__all__ = ["Projective"]

#: Smallest ``|w|`` the perspective division uses. A homography whose ``w`` vanishes at some output point (the
#: point maps to infinity, e.g. the horizon line) gives a finite but far-away source point there (``|x| <= 1/eps``
#: times the numerator), which samples as padding, instead of inf/NaN; the sign of ``w`` is kept.
PERSPECTIVE_EPS = 1e-6


def _divide(num: Tensor, w: Tensor) -> Tensor:
    # |w| clamped to PERSPECTIVE_EPS with its sign kept (w = 0 counts as positive): finite values and gradients
    w_safe = torch.copysign(w.abs().clamp_min(PERSPECTIVE_EPS), w)
    return num / w_safe


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
