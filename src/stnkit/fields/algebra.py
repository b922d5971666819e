"""Field algebra: composition of fields (and of a field with a parametric transform) and approximate inversion.

All three work in the normalised (x, y[, z]) frame internally and return fields in the caller's convention, so an
image is sampled once through the result instead of once per step (MONAI#4604: "each warping will blur").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit import transforms as _transforms
from stnkit.fields.conventions import (
    check_displacement,
    check_field_options,
    convert,
    displacement_to_grid,
    grid_to_displacement,
)
from stnkit.grid import identity_grid
from stnkit.sampling import check_options, sample
from stnkit.transforms import Transform

__all__ = ["compose", "compose_transform", "invert"]


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.ndim != b.ndim:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must both be 2-D or both 3-D")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"batch size mismatch: {name_a} has batch {a.shape[0]} but {name_b} has batch "
                         f"{b.shape[0]} (expected equal or 1)")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device; got {a.device} and {b.device}")


def _sample_field(field: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    if field.shape[0] == 1 and grid.shape[0] != 1:
        field = field.expand(grid.shape[0], *field.shape[1:])  # one field for every grid
    return sample(field, grid.to(field.dtype), mode, padding_mode, align_corners)


def compose(
    a: Tensor,
    b: Tensor,
    *,
    units: str = "normalized",
    order: str = "xy",
    size: Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "border",
    align_corners: bool = False,
) -> Tensor:
    """Compose two displacements into one field, so that ``x`` is sampled once instead of twice.

    ``warp(x, compose(a, b)) ≈ warp(warp(x, a), b)`` with ``d(p) = b(p) + a(p + b(p))``: ``b`` is applied last
    to the image, so it is read first; ``a`` is interpolated at the points ``b`` reaches (border padding by
    default, so a field is extended by its edge values).

    Args:
        a: first field (N, d, *spatial_a), warping the source ``x``.
        b: second field (N, d, *spatial_b), warping the output of the first warp (which has spatial_a).
        units: convention of ``a``, ``b`` and the result: ``"normalized"`` or ``"voxel"``.
        order: ``"xy"`` or ``"ij"``.
        size: spatial size of ``x`` (the voxels ``a`` and the result count); default spatial_a.
        mode: interpolation of ``a`` (``"bilinear"``, ``"nearest"``; ``"bicubic"`` in 2-D).
        padding_mode: values of ``a`` outside its grid.
        align_corners: frame convention.

    Returns:
        Field (N, d, *spatial_b) in the same convention.

    Raises:
        TypeError, ValueError: as :func:`stnkit.fields.warp`, or ``a`` and ``b`` of different rank.

    Example:
        >>> import torch
        >>> a, b = torch.full((1, 2, 4, 4), 0.1), torch.full((1, 2, 4, 4), 0.2)
        >>> compose(a, b)[0, :, 0, 0]
        tensor([0.3000, 0.3000])
    """
    check_displacement(a, "a")
    check_displacement(b, "b")
    _check_pair(a, b, "a", "b")
    check_field_options(units, order)
    check_options(mode, padding_mode, a.ndim - 2)
    src = tuple(a.shape[2:]) if size is None else tuple(size)
    a_n = convert(a, from_units=units, from_order=order, size=src, align_corners=align_corners)
    b_n = convert(b, from_units=units, from_order=order, size=tuple(a.shape[2:]), align_corners=align_corners)
    grid = displacement_to_grid(b_n, align_corners=align_corners)  # (N, *spatial_b, d)
    d_n = b_n + _sample_field(a_n, grid, mode, padding_mode, align_corners)  # (N, d, *spatial_b)
    return convert(d_n, to_units=units, to_order=order, size=src, align_corners=align_corners)


def compose_transform(
    params: Tensor,
    displacement: Tensor,
    transform: str | Transform = "affine",
    *,
    transform_first: bool = True,
    output_size: Sequence[int] | None = None,
    units: str = "normalized",
    order: str = "xy",
    size: Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "border",
    align_corners: bool = False,
) -> Tensor:
    """Compose a parametric transform (affine, projective, TPS, ...) with a displacement into one displacement.

    ``transform_first=True``: ``warp(x, result) ≈ warp(warp(x, params, transform), displacement)``, exactly
    ``T(p + d(p)) - p``: the transform is evaluated at the displaced points, nothing is interpolated (an
    affine-then-dense cascade). ``transform_first=False``: ``≈ warp(stnkit.warp(warp(x, displacement), params,
    transform), ...)``, ``T(p) - p + d(T(p))``: the field is interpolated at the transform's grid.

    Args:
        params: transform parameters (N, P) (batch 1 broadcasts), output -> source, normalised frame.
        displacement: field (N, d, *spatial) in the given convention.
        transform: a name or :class:`~stnkit.transforms.Transform` with ``spatial_dims == d``.
        transform_first: which is applied to the image first (see above).
        output_size: ``transform_first=False`` only: spatial size of the transform's output (default the field's).
        units: ``"normalized"`` or ``"voxel"``, of ``displacement`` and the result.
        order: ``"xy"`` or ``"ij"``.
        size: spatial size of ``x`` (the voxels of the result); default the field's. With
            ``transform_first=True`` the field's own voxels are those of the transform's output, taken to be the
            field's size.
        mode: interpolation of the field (``transform_first=False``).
        padding_mode: the field's values outside its grid (``transform_first=False``).
        align_corners: frame convention.

    Returns:
        Field (N, d, *spatial) (``transform_first=True``) or (N, d, *output_size), same convention.

    Raises:
        ValueError: a transform of another dimensionality, and as :func:`stnkit.fields.warp`.

    Example:
        >>> theta = torch.tensor([[1.0, 0.0, 0.5, 0.0, 1.0, 0.0]])
        >>> compose_transform(theta, torch.zeros(1, 2, 4, 4))[0, :, 0, 0]
        tensor([0.5000, 0.0000])
    """
    t = _transforms.get(transform)
    check_displacement(displacement)
    d = displacement.ndim - 2
    if t.spatial_dims != d:
        raise ValueError(f"transform={t.name!r} is {t.spatial_dims}-D but displacement "
                         f"{tuple(displacement.shape)} is {d}-D")
    params = t.check_params(params)
    if params.shape[0] != displacement.shape[0] and 1 not in (params.shape[0], displacement.shape[0]):
        raise ValueError(f"batch size mismatch: params has batch {params.shape[0]} but displacement has batch "
                         f"{displacement.shape[0]} (expected equal or 1)")
    if params.device != displacement.device:
        raise ValueError(f"params and displacement must be on the same device; got {params.device} and "
                         f"{displacement.device}")
    check_field_options(units, order)
    check_options(mode, padding_mode, d)
    field_size = tuple(int(s) for s in displacement.shape[2:])
    src = field_size if size is None else tuple(size)
    if transform_first:
        grid = displacement_to_grid(displacement, units=units, order=order, align_corners=align_corners)
        n = max(params.shape[0], grid.shape[0])
        points = grid.expand(n, *grid.shape[1:]).reshape(n, -1, d)  # (N, M, d)
        src_grid = t.transform_points(params.expand(n, -1), points).reshape(n, *field_size, d)  # (N, *spatial, d)
        return grid_to_displacement(src_grid.to(displacement.dtype), units=units, order=order, size=src,
                                    align_corners=align_corners)
    out = field_size if output_size is None else tuple(output_size)
    n = max(params.shape[0], displacement.shape[0])
    t_grid = t.grid(params.expand(n, -1), out, align_corners)  # (N, *out, d)
    field_n = convert(displacement, from_units=units, from_order=order, size=src, align_corners=align_corners)
    base = identity_grid(out, align_corners, device=t_grid.device, dtype=t_grid.dtype)  # (1, *out, d)
    moved = (t_grid - base).movedim(-1, 1).to(displacement.dtype)  # (N, d, *out)
    d_n = moved + _sample_field(field_n, t_grid, mode, padding_mode, align_corners)
    return convert(d_n, to_units=units, to_order=order, size=src, align_corners=align_corners)


def invert(
    displacement: Tensor,
    iterations: int = 20,
    *,
    units: str = "normalized",
    order: str = "xy",
    mode: str = "bilinear",
    padding_mode: str = "border",
    align_corners: bool = False,
) -> tuple[Tensor, Tensor]:
    """Approximate the inverse displacement by fixed-point iteration; return it with its residual.

    The inverse ``u`` of ``d`` satisfies ``u(p) + d(p + u(p)) = 0`` (``warp(warp(x, d), u) ≈ x``, i.e.
    ``compose(d, u) ≈ 0``); iterating ``u <- -d(p + u(p))`` from ``u = -d`` converges where the Jacobian of ``d``
    has norm below 1 (Chen et al. 2008). A fixed number of iterations keeps the device unsynchronised. The field
    and its inverse live on the same grid (the source has the field's size).

    Args:
        displacement: field (N, 2, H, W) or (N, 3, D, H, W) in the given convention.
        iterations: number of fixed-point updates, an int >= 0.
        units: ``"normalized"`` or ``"voxel"``.
        order: ``"xy"`` or ``"ij"``.
        mode: interpolation of the field.
        padding_mode: the field's values outside its grid (border by default).
        align_corners: frame convention.

    Returns:
        ``(inverse, residual)``: the inverse field (same shape and convention) and, per sample (N,), the largest
        length of ``compose(displacement, inverse)`` over the grid, in the field's units.

    Raises:
        ValueError: negative or non-integer ``iterations``, and as :func:`stnkit.fields.warp`.

    Example:
        >>> u, residual = invert(torch.full((1, 2, 8, 8), 0.1))
        >>> u[0, :, 4, 4], residual
        (tensor([-0.1000, -0.1000]), tensor([0.]))
    """
    check_displacement(displacement)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0; got {iterations!r}")
    check_field_options(units, order)
    check_options(mode, padding_mode, displacement.ndim - 2)
    d_n = convert(displacement, from_units=units, from_order=order, align_corners=align_corners)
    u = -d_n
    for _ in range(iterations):
        u = -_sample_field(d_n, displacement_to_grid(u, align_corners=align_corners), mode, padding_mode,
                           align_corners)
    residual_n = u + _sample_field(d_n, displacement_to_grid(u, align_corners=align_corners), mode, padding_mode,
                                   align_corners)  # (N, d, *spatial)
    residual = convert(residual_n, to_units=units, to_order=order, align_corners=align_corners)
    inverse = convert(u, to_units=units, to_order=order, align_corners=align_corners)
    return inverse, torch.linalg.vector_norm(residual, dim=1).flatten(1).amax(1)
