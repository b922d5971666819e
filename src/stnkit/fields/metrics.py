"""Jacobian determinant of the map ``p -> p + d(p)`` and the fraction of folded locations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit.fields.conventions import check_displacement, check_field_options, convert

__all__ = ["folding_fraction", "jacobian_determinant"]


def _det(j: list[list[Tensor]]) -> Tensor:
    if len(j) == 2:
        return j[0][0] * j[1][1] - j[0][1] * j[1][0]
    return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))


def jacobian_determinant(
    displacement: Tensor,
    *,
    units: str = "normalized",
    order: str = "xy",
    size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Return the Jacobian determinant of ``p -> p + d(p)`` at every grid point, by finite differences.

    Derivatives are central differences inside the grid and one-sided at its edges (``torch.gradient``), taken
    along the grid's own spacing in the field's frame, so a field of an affine map gives exactly the determinant
    of its matrix. The value is the local volume ratio source / output; 1 for the zero field, <= 0 where the map
    folds. With ``units="voxel"`` and ``size`` the field's size (the default) it is the voxel-frame determinant
    (MONAI, VoxelMorph).

    Args:
        displacement: field (N, 2, H, W) or (N, 3, D, H, W), every spatial size >= 2.
        units: ``"normalized"`` or ``"voxel"``.
        order: ``"xy"`` or ``"ij"``.
        size: spatial size of the source (for voxel units); default the field's.
        align_corners: frame convention.

    Returns:
        Determinants (N, H, W) or (N, D, H, W).

    Raises:
        ValueError: a spatial size below 2, and as :func:`stnkit.fields.warp`.

    Example:
        >>> jacobian_determinant(torch.zeros(2, 2, 4, 5)).shape
        torch.Size([2, 4, 5])
    """
    check_displacement(displacement)
    check_field_options(units, order)
    spatial = tuple(int(s) for s in displacement.shape[2:])
    if min(spatial) < 2:
        raise ValueError(f"jacobian_determinant needs every spatial size >= 2; got displacement "
                         f"{tuple(displacement.shape)}")
    field = convert(displacement, from_units=units, from_order=order, to_order="ij", size=size,
                    align_corners=align_corners)  # channel c along spatial axis c
    steps = [2.0 / (n - 1) if align_corners else 2.0 / n for n in spatial]
    d = len(spatial)
    jac = []
    for c in range(d):
        grads = torch.gradient(field[:, c], spacing=steps, dim=tuple(range(1, d + 1)))  # d x (N, *spatial)
        jac.append([g + 1.0 if k == c else g for k, g in enumerate(grads)])
    return _det(jac)


def folding_fraction(
    displacement: Tensor,
    *,
    units: str = "normalized",
    order: str = "xy",
    size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Return the fraction of grid points where the map folds (Jacobian determinant <= 0), per sample.

    Args:
        displacement: field (N, 2, H, W) or (N, 3, D, H, W), as :func:`jacobian_determinant`.
        units: ``"normalized"`` or ``"voxel"``.
        order: ``"xy"`` or ``"ij"``.
        size: spatial size of the source (for voxel units).
        align_corners: frame convention.

    Returns:
        Fractions (N,) in [0, 1], the field's dtype (not differentiable).

    Example:
        >>> folding_fraction(torch.zeros(2, 2, 4, 4))
        tensor([0., 0.])
    """
    det = jacobian_determinant(displacement, units=units, order=order, size=size, align_corners=align_corners)
    return (det <= 0).flatten(1).to(displacement.dtype).mean(1)
