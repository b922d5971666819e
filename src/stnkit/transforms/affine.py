"""Affine transforms (eq. 1 of Jaderberg et al. 2015) and their constrained forms.

All map output points to source points in the normalised frame: ``(x_s, y_s) = A_theta (x_t, y_t, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit._checks import check_float, check_tensor, normalize_size, shape_str
from stnkit.transforms.base import MatrixTransform, grid_dtype, no_autocast
from stnkit.transforms.grid_fns import affine_grid_fast, affine_grid_reference

__all__ = ["Affine", "Attention", "Similarity", "Translation", "affine_grid"]


def affine_grid(theta: Tensor, output_size: int | Sequence[int], *, align_corners: bool = False) -> Tensor:
    """Map a regular output grid through affine matrices to source sampling coordinates.

    Same result as ``F.affine_grid(theta, (N, C, H_out, W_out))``, built with broadcast multiply-adds instead of a
    batched matmul over a materialised base grid.

    Args:
        theta: output->source affine matrices, shape (N, 2, 3), normalised frame (see :mod:`stnkit.grid`).
        output_size: (H_out, W_out) of the sampling grid.
        align_corners: frame convention (default False, as torch).

    Returns:
        Grid of shape (N, H_out, W_out, 2), last dim (x, y) in the normalised source frame; float32 unless theta
        is float64.

    Example:
        >>> affine_grid(torch.tensor([[[1.0, 0, 0], [0, 1, 0]]]), (2, 3)).shape
        torch.Size([1, 2, 3, 2])
    """
    check_tensor(theta, "theta")
    check_float(theta, "theta")
    if theta.ndim != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3); got {shape_str(theta)}")
    h, w = normalize_size(output_size, 2)
    with no_autocast(theta.device):
        return _affine_grid(theta.to(grid_dtype(theta.dtype)), (h, w), align_corners)


def _affine_grid(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    # broadcast forward, analytic backward (transforms/grid_fns.py); affine_grid_reference is the autograd path
    return affine_grid_fast(theta, size, align_corners)  # (N, H, W, 2)


class _Affine2D(MatrixTransform):
    """Shared machinery for the 2-D affine families: they all reduce to a (N, 2, 3) matrix."""

    def _theta(self, params: Tensor) -> Tensor:
        """Return the (N, 2, 3) affine matrix of (N, P) params."""
        raise NotImplementedError

    def _grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        return _affine_grid(self._theta(params), size, align_corners)

    def _reference_grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        return affine_grid_reference(self._theta(params), size, align_corners)

    def _to_matrix(self, params: Tensor) -> Tensor:
        theta = self._theta(params)  # (N, 2, 3)
        last = torch.zeros(theta.shape[0], 1, 3, device=theta.device, dtype=theta.dtype)
        last[:, 0, 2] = 1.0
        return torch.cat([theta, last], dim=1)  # (N, 3, 3)

    def affine_matrix(self, params: Tensor) -> Tensor:
        """Return the output->source affine matrices, shape (N, 2, 3), of params (N, P)."""
        return self._theta(self.check_params(params))


class Affine(_Affine2D):
    """General 2-D affine transform, 6 parameters: row-major ``[[a, b, tx], [c, d, ty]]`` (``F.affine_grid``'s theta).

    Example:
        >>> t = Affine()
        >>> t.grid(t.identity()[None], (4, 5)).shape
        torch.Size([1, 4, 5, 2])
    """

    name = "affine"
    num_params = 6

    def _accepted_shapes(self):
        return [(6,), (2, 3)]

    def _identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def _theta(self, params: Tensor) -> Tensor:
        return params.view(-1, 2, 3)  # (N, 2, 3)

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        return matrix[:, :2, :].reshape(-1, 6)  # (N, 6)


class Attention(_Affine2D):
    """Isotropic scale and translation, 3 parameters ``(s, tx, ty)`` -> ``[[s, 0, tx], [0, s, ty]]``.

    The paper's attention/crop form: the output is a square window of half-width ``s`` centred on ``(tx, ty)``.

    Example:
        >>> Attention().transform_points(torch.tensor([[0.5, 0.1, 0.2]]), torch.tensor([[1.0, 1.0]]))
        tensor([[[0.6000, 0.7000]]])
    """

    name = "attention"
    num_params = 3

    def _identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0])

    def _theta(self, params: Tensor) -> Tensor:
        s, tx, ty = params.unbind(-1)
        zero = torch.zeros_like(s)
        return torch.stack([s, zero, tx, zero, s, ty], dim=-1).view(-1, 2, 3)  # (N, 2, 3)

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        s = 0.5 * (matrix[:, 0, 0] + matrix[:, 1, 1])
        return torch.stack([s, matrix[:, 0, 2], matrix[:, 1, 2]], dim=-1)  # (N, 3)


class Translation(_Affine2D):
    """Translation only, 2 parameters ``(tx, ty)`` -> ``[[1, 0, tx], [0, 1, ty]]``.

    Example:
        >>> Translation().transform_points(torch.tensor([[0.5, 0.0]]), torch.zeros(1, 2))
        tensor([[[0.5000, 0.0000]]])
    """

    name = "translation"
    num_params = 2

    def _identity(self) -> Tensor:
        return torch.zeros(2)

    def _theta(self, params: Tensor) -> Tensor:
        tx, ty = params.unbind(-1)
        one, zero = torch.ones_like(tx), torch.zeros_like(tx)
        return torch.stack([one, zero, tx, zero, one, ty], dim=-1).view(-1, 2, 3)  # (N, 2, 3)

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        return matrix[:, :2, 2]  # (N, 2)


class Similarity(_Affine2D):
    """Rotation, isotropic scale and translation, 4 parameters ``(a, b, tx, ty)`` -> ``[[a, -b, tx], [b, a, ty]]``.

    With ``a = s cos(phi)`` and ``b = s sin(phi)`` the linear part is ``s R(phi)``; this linear parameterisation
    (rather than ``(s, phi, tx, ty)``) has no angle wrap-around and no singularity at ``s = 0``, which keeps the
    regression well behaved. Use :meth:`from_scale_angle` to build parameters from ``(s, phi, tx, ty)``.

    Example:
        >>> import math
        >>> p = Similarity.from_scale_angle(torch.tensor([2.0]), torch.tensor([math.pi / 2]), torch.zeros(1),
        ...                                 torch.zeros(1))
        >>> Similarity().transform_points(p, torch.tensor([[1.0, 0.0]])).round(decimals=4) + 0.0
        tensor([[[0., 2.]]])
    """

    name = "similarity"
    num_params = 4

    @staticmethod
    def from_scale_angle(scale: Tensor, angle: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
        """Return parameters (N, 4) from scale, angle (radians, counter-clockwise in (x, y)) and translation (N,)."""
        return torch.stack([scale * torch.cos(angle), scale * torch.sin(angle), tx, ty], dim=-1)

    def _identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0])

    def _theta(self, params: Tensor) -> Tensor:
        a, b, tx, ty = params.unbind(-1)
        return torch.stack([a, -b, tx, b, a, ty], dim=-1).view(-1, 2, 3)  # (N, 2, 3)

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        a = 0.5 * (matrix[:, 0, 0] + matrix[:, 1, 1])
        b = 0.5 * (matrix[:, 1, 0] - matrix[:, 0, 1])
        return torch.stack([a, b, matrix[:, 0, 2], matrix[:, 1, 2]], dim=-1)  # (N, 4)


