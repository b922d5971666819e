"""Warping by dense displacement fields and scaling-and-squaring integration of stationary velocity fields."""

from __future__ import annotations

from torch import Tensor

from stnkit.fields.conventions import check_displacement, check_field_options, displacement_to_grid
from stnkit.sampling import check_options, sample

__all__ = ["integrate", "warp"]


def _check_input(input: object, displacement: Tensor) -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor; got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must have a floating-point dtype; got {input.dtype}")
    d = displacement.ndim - 2
    if input.ndim != displacement.ndim:
        layout = "(N, C, H, W)" if d == 2 else "(N, C, D, H, W)"
        raise ValueError(f"input for a {d}-D displacement {tuple(displacement.shape)} must have shape {layout}; "
                         f"got {tuple(input.shape)}")
    n, m = input.shape[0], displacement.shape[0]
    if m not in (1, n):
        raise ValueError(f"batch size mismatch: input has batch {n} but displacement has batch {m} (expected {n} "
                         f"or 1)")
    if input.device != displacement.device:
        raise ValueError(f"input and displacement must be on the same device; got {input.device} and "
                         f"{displacement.device}")
    return input


def warp(
    input: Tensor,
    displacement: Tensor,
    *,
    units: str = "normalized",
    order: str = "xy",
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    fill_value: float | Tensor | None = None,
) -> Tensor:
    """Warp ``input`` by a dense displacement: output location p reads ``input`` at p + d(p).

    The output has the field's spatial size; with ``units="voxel"`` the displacement counts voxels of ``input``
    (whose size may differ from the field's). Sampling goes through :func:`stnkit.sampling.sample`, so every
    mode and padding (``"fill"`` with ``fill_value`` too) works as there. MONAI's ``Warp`` and VoxelMorph's
    ``SpatialTransformer`` are ``units="voxel", order="ij", align_corners=True``.

    Args:
        input: images (N, C, H_in, W_in) or volumes (N, C, D_in, H_in, W_in), floating point.
        displacement: field (N, 2, H, W) or (N, 3, D, H, W) (batch 1 applies to all N inputs).
        units: ``"normalized"`` ([-1, 1] frame of ``F.grid_sample``) or ``"voxel"`` (pixels of ``input``).
        order: ``"xy"`` (channel 0 along width) or ``"ij"`` (channel 0 along the first spatial axis).
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (2-D only).
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"``.
        align_corners: frame convention (default False, as torch).
        fill_value: with ``padding_mode="fill"`` only: a number or a tensor (C,).

    Returns:
        Output (N, C, H, W) or (N, C, D, H, W), the dtype of ``input``.

    Raises:
        TypeError: non-tensor or non-floating-point input/displacement.
        ValueError: mismatched ranks, batch or device; unknown units/order/mode/padding_mode.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 8, 8)
        >>> warp(x, torch.zeros(2, 2, 4, 6)).shape
        torch.Size([2, 3, 4, 6])
        >>> torch.equal(warp(x, torch.zeros(1, 2, 8, 8)), x)
        True
    """
    check_displacement(displacement)
    _check_input(input, displacement)
    check_field_options(units, order)
    check_options(mode, padding_mode, displacement.ndim - 2, fill_value)
    grid = displacement_to_grid(displacement, units=units, order=order, size=tuple(input.shape[2:]),
                                align_corners=align_corners)  # (N, *spatial, d)
    return sample(input, grid, mode, padding_mode, align_corners, fill_value=fill_value)


def integrate(
    velocity: Tensor,
    steps: int = 7,
    *,
    units: str = "normalized",
    order: str = "xy",
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Integrate a stationary velocity field to a diffeomorphic displacement by scaling and squaring.

    ``d = v / 2**steps``, then ``steps`` times ``d <- d + warp(d, d)`` (the flow of v at time 1, Arsigny et al.
    2006). This is MONAI's ``DVF2DDF(num_steps=steps)`` and VoxelMorph's ``VecInt`` exactly, with their
    ``units="voxel", order="ij", align_corners=True`` and zero padding; ``steps=0`` returns v.

    Args:
        velocity: field (N, 2, H, W) or (N, 3, D, H, W) in the given convention.
        steps: number of squarings, an int >= 0.
        units: ``"normalized"`` or ``"voxel"`` (of the field's own grid).
        order: ``"xy"`` or ``"ij"``.
        mode: interpolation of the field in each squaring (``"bilinear"`` or ``"nearest"``).
        padding_mode: field values read outside the grid (``"zeros"`` as MONAI and VoxelMorph, or ``"border"``).
        align_corners: frame convention.

    Returns:
        Displacement of the same shape and convention as ``velocity``.

    Raises:
        ValueError: negative or non-integer ``steps``, and as :func:`warp`.

    Example:
        >>> import torch
        >>> v = torch.full((1, 2, 8, 8), 0.25)
        >>> integrate(v).shape
        torch.Size([1, 2, 8, 8])
    """
    check_displacement(velocity, "velocity")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0; got {steps!r}")
    check_field_options(units, order)
    check_options(mode, padding_mode, velocity.ndim - 2)
    disp = velocity / 2**steps
    for _ in range(steps):
        disp = disp + _self_warp(disp, units, order, mode, padding_mode, align_corners)
    return disp


def _self_warp(field: Tensor, units: str, order: str, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    grid = displacement_to_grid(field, units=units, order=order, align_corners=align_corners)  # (N, *spatial, d)
    return sample(field, grid, mode, padding_mode, align_corners)

