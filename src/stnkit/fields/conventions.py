"""Displacement-field conventions: units, channel order, and the checks every ``stnkit.fields`` function shares.

Convention:
    A displacement is channels-first, (N, 2, H, W) or (N, 3, D, H, W) (MONAI's DDF layout); output location p
    reads the source at p + d(p). ``units="normalized"``: the [-1, 1] frame of ``F.grid_sample``; ``"voxel"``:
    source pixels/voxels. ``order="xy"``: channel 0 is x (width), as torch grids; ``"ij"``: channel 0 indexes the
    first spatial axis (MONAI, VoxelMorph). Both unit frames share the origin, so converting units only scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit.grid import identity_grid, normalization_matrix

__all__ = [
    "ORDERS",
    "UNITS",
    "check_displacement",
    "check_field_options",
    "convert",
    "displacement_to_grid",
    "grid_to_displacement",
    "ij_to_xy",
    "to_normalized",
    "to_voxel",
    "xy_to_ij",
]

UNITS = ("normalized", "voxel")
ORDERS = ("xy", "ij")


def _shape(x: Tensor) -> str:
    return "(" + ", ".join(str(int(s)) for s in x.shape) + ")"


def check_displacement(displacement: object, name: str = "displacement") -> Tensor:
    """Validate a displacement field's type and shape (never its values) and return it.

    Args:
        displacement: a floating-point tensor (N, 2, H, W) or (N, 3, D, H, W).
        name: the argument's name in error messages.

    Returns:
        ``displacement`` unchanged.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: a rank other than 4 or 5, or a channel count other than the number of spatial axes.

    Example:
        >>> check_displacement(torch.zeros(1, 2, 4, 4)).shape
        torch.Size([1, 2, 4, 4])
    """
    if not isinstance(displacement, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(displacement).__name__}")
    if not displacement.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype; got {displacement.dtype}")
    if displacement.ndim not in (4, 5) or displacement.shape[1] != displacement.ndim - 2:
        raise ValueError(f"{name} must have shape (N, 2, H, W) or (N, 3, D, H, W) (channels-first, one channel per "
                         f"spatial axis); got {_shape(displacement)}")
    return displacement


def check_field_options(units: str, order: str) -> None:
    """Validate ``units`` and ``order``.

    Raises:
        ValueError: an unknown value (the message lists the known ones).

    Example:
        >>> check_field_options("voxel", "ij")
    """
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}; expected one of {', '.join(map(repr, UNITS))}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {', '.join(map(repr, ORDERS))}")


def _size(displacement: Tensor, size: Sequence[int] | None) -> tuple[int, ...]:
    d = displacement.ndim - 2
    if size is None:
        return tuple(int(s) for s in displacement.shape[2:])
    out = tuple(int(s) for s in size)
    if len(out) != d or any(s <= 0 for s in out):
        axes = "(H, W)" if d == 2 else "(D, H, W)"
        raise ValueError(f"size must be {d} positive ints {axes} for a field {_shape(displacement)}; got {size!r}")
    return out


def _scale(displacement: Tensor, size: tuple[int, ...], align_corners: bool, order: str) -> Tensor:
    d = len(size)
    xy = normalization_matrix(size, align_corners, device=displacement.device).diagonal()[:d]  # (d,) as (x, y, z)
    per_channel = xy if order == "xy" else xy.flip(0)
    return per_channel.to(displacement.dtype).reshape(1, d, *([1] * d))  # (1, d, 1, 1[, 1])


def xy_to_ij(displacement: Tensor) -> Tensor:
    """Reorder channels from (x, y[, z]) to (i, j[, k]) (first spatial axis first).

    Args:
        displacement: field (N, 2, H, W) or (N, 3, D, H, W), channel 0 along width.

    Returns:
        The same field with its channels reversed.

    Example:
        >>> xy_to_ij(torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1)).flatten()
        tensor([2., 1.])
    """
    return check_displacement(displacement).flip(1)


def ij_to_xy(displacement: Tensor) -> Tensor:
    """Reorder channels from (i, j[, k]) to (x, y[, z]) (the inverse of :func:`xy_to_ij`).

    Example:
        >>> ij_to_xy(torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1)).flatten()
        tensor([2., 1.])
    """
    return check_displacement(displacement).flip(1)


def to_normalized(
    displacement: Tensor, size: Sequence[int] | None = None, *, order: str = "xy", align_corners: bool = False
) -> Tensor:
    """Convert a voxel-unit displacement to normalised units, keeping its channel order.

    Args:
        displacement: field (N, d, *spatial) in source voxels.
        size: spatial size of the source, (H, W) or (D, H, W); default the field's own size.
        order: channel order of ``displacement``, ``"xy"`` or ``"ij"``.
        align_corners: the normalised frame meant (one voxel is 2 / n with False, 2 / (n - 1) with True).

    Returns:
        Field of the same shape in normalised units.

    Example:
        >>> to_normalized(torch.ones(1, 2, 4, 8)).amax((2, 3))
        tensor([[0.2500, 0.5000]])
    """
    check_displacement(displacement)
    check_field_options("voxel", order)
    return displacement * _scale(displacement, _size(displacement, size), align_corners, order)


def to_voxel(
    displacement: Tensor, size: Sequence[int] | None = None, *, order: str = "xy", align_corners: bool = False
) -> Tensor:
    """Convert a normalised displacement to source voxels (the inverse of :func:`to_normalized`).

    Args:
        displacement: field (N, d, *spatial) in normalised units.
        size: spatial size of the source; default the field's own size.
        order: channel order, ``"xy"`` or ``"ij"``.
        align_corners: the normalised frame of ``displacement``.

    Returns:
        Field of the same shape in voxels.

    Example:
        >>> to_voxel(torch.full((1, 2, 4, 8), 0.5), align_corners=True).amax((2, 3))
        tensor([[1.7500, 0.7500]])
    """
    check_displacement(displacement)
    check_field_options("voxel", order)
    return displacement / _scale(displacement, _size(displacement, size), align_corners, order)


def convert(
    displacement: Tensor,
    *,
    from_units: str = "normalized",
    to_units: str = "normalized",
    from_order: str = "xy",
    to_order: str = "xy",
    size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Convert a displacement between unit and channel-order conventions.

    Args:
        displacement: field (N, d, *spatial).
        from_units: units of ``displacement``, ``"normalized"`` or ``"voxel"``.
        to_units: units of the result.
        from_order: channel order of ``displacement``, ``"xy"`` or ``"ij"``.
        to_order: channel order of the result.
        size: spatial size of the source the voxels are counted in; default the field's own size.
        align_corners: the normalised frame meant.

    Returns:
        The field in the requested convention, same shape.

    Example:
        >>> d = torch.ones(1, 2, 4, 8)
        >>> convert(d, from_units="voxel", from_order="ij", align_corners=True).amax((2, 3))
        tensor([[0.2857, 0.6667]])
    """
    check_displacement(displacement)
    check_field_options(from_units, from_order)
    check_field_options(to_units, to_order)
    shape = _size(displacement, size)
    out = displacement
    if from_units != to_units:
        scale = _scale(displacement, shape, align_corners, from_order)
        out = out * scale if to_units == "normalized" else out / scale
    return out.flip(1) if from_order != to_order else out


def displacement_to_grid(
    displacement: Tensor,
    *,
    units: str = "normalized",
    order: str = "xy",
    size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Return the sampling grid identity + displacement, channels-last, normalised (x, y[, z]).

    Args:
        displacement: field (N, d, *spatial) in the given convention.
        units: ``"normalized"`` or ``"voxel"``.
        order: ``"xy"`` or ``"ij"``.
        size: spatial size of the source (for voxel units); default the field's own size.
        align_corners: frame of the grid.

    Returns:
        Grid (N, H, W, 2) or (N, D, H, W, 3) for :func:`stnkit.sampling.sample`, float32 (float64 for float64).

    Example:
        >>> displacement_to_grid(torch.zeros(1, 2, 3, 5)).shape
        torch.Size([1, 3, 5, 2])
    """
    field = convert(displacement, from_units=units, from_order=order, size=size, align_corners=align_corners)
    dtype = torch.float64 if field.dtype == torch.float64 else torch.float32
    base = identity_grid(tuple(field.shape[2:]), align_corners, device=field.device, dtype=dtype)  # (1, *sp, d)
    return base + field.to(dtype).movedim(1, -1)  # (N, *spatial, d)


def grid_to_displacement(
    grid: Tensor,
    *,
    units: str = "normalized",
    order: str = "xy",
    size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Return the displacement grid - identity, channels-first, in the requested convention.

    Args:
        grid: normalised sampling grid (N, H, W, 2) or (N, D, H, W, 3), last dim (x, y[, z]).
        units: units of the result.
        order: channel order of the result.
        size: spatial size of the source (for voxel units); default the grid's size.
        align_corners: frame of ``grid``.

    Returns:
        Field (N, d, *spatial).

    Example:
        >>> from stnkit.grid import identity_grid
        >>> grid_to_displacement(identity_grid((3, 5))).abs().max()
        tensor(0.)
    """
    if not isinstance(grid, Tensor) or grid.ndim not in (4, 5) or grid.shape[-1] != grid.ndim - 2:
        got = _shape(grid) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(f"grid must have shape (N, H, W, 2) or (N, D, H, W, 3); got {got}")
    base = identity_grid(tuple(grid.shape[1:-1]), align_corners, device=grid.device, dtype=grid.dtype)
    field = (grid - base).movedim(-1, 1)  # (N, d, *spatial)
    return convert(field, to_units=units, to_order=order, size=size, align_corners=align_corners)
