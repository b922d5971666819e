"""3-D affine transform for volumes (N, C, D, H, W): a 3x4 matrix on (x, y, z, 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit._checks import check_float, check_tensor, normalize_size, shape_str
from stnkit.transforms.base import MatrixTransform, grid_dtype, no_autocast
from stnkit.transforms.grid_fns import affine_grid3d_reference, affine_grid_fast

__all__ = ["Affine3D", "affine_grid3d"]


def affine_grid3d(theta: Tensor, output_size: int | Sequence[int], *, align_corners: bool = False) -> Tensor:
    """Map a regular 3-D output grid through affine matrices to source sampling coordinates.

    Same result as ``F.affine_grid(theta, (N, C, D_out, H_out, W_out))``, with broadcast multiply-adds.

    Args:
        theta: output->source matrices, shape (N, 3, 4), acting on normalised (x, y, z, 1).
        output_size: (D_out, H_out, W_out).
        align_corners: frame convention (default False, as torch).

    Returns:
        Grid of shape (N, D_out, H_out, W_out, 3), last dim (x, y, z), normalised.

    Example:
        >>> affine_grid3d(torch.eye(3, 4)[None], (2, 3, 4)).shape
        torch.Size([1, 2, 3, 4, 3])
    """
    check_tensor(theta, "theta")
    check_float(theta, "theta")
    if theta.ndim != 3 or tuple(theta.shape[1:]) != (3, 4):
        raise ValueError(f"theta must have shape (N, 3, 4); got {shape_str(theta)}")
    size = normalize_size(output_size, 3)
    with no_autocast(theta.device):
        return _affine_grid3d(theta.to(grid_dtype(theta.dtype)), size, align_corners)


def _affine_grid3d(theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
    # broadcast forward, analytic backward (transforms/grid_fns.py); affine_grid3d_reference is the autograd path
    return affine_grid_fast(theta, size, align_corners)  # (N, D, H, W, 3)


class Affine3D(MatrixTransform):
    """General 3-D affine transform, 12 parameters: row-major 3x4 matrix on (x, y, z, 1) (``F.affine_grid``'s theta).

    Example:
        >>> t = Affine3D()
        >>> t.grid(t.identity()[None], (2, 3, 4)).shape
        torch.Size([1, 2, 3, 4, 3])
    """

    name = "affine3d"
    spatial_dims = 3
    num_params = 12

    def _accepted_shapes(self):
        return [(12,), (3, 4)]

    def _identity(self) -> Tensor:
        return torch.eye(3, 4).reshape(12)

    def _grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        return _affine_grid3d(params.view(-1, 3, 4), size, align_corners)

    def _reference_grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        return affine_grid3d_reference(params.view(-1, 3, 4), size, align_corners)

    def _to_matrix(self, params: Tensor) -> Tensor:
        last = torch.zeros(params.shape[0], 1, 4, device=params.device, dtype=params.dtype)
        last[:, 0, 3] = 1.0
        return torch.cat([params.view(-1, 3, 4), last], dim=1)  # (N, 4, 4)

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        return matrix[:, :3, :].reshape(-1, 12)  # (N, 12)

    def affine_matrix(self, params: Tensor) -> Tensor:
        """Return the output->source matrices, shape (N, 3, 4), of params (N, 12)."""
        return self.check_params(params).view(-1, 3, 4)
