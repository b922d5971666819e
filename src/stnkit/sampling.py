"""The sampler (Jaderberg et al. 2015, eq. 3-7) and ``warp`` = grid generator + sampler.

Convention:
    ``grid[..., 0]`` is x (width), ``grid[..., 1]`` is y (height), ``grid[..., 2]`` is z (depth), normalised to
    [-1, 1] as in ``F.grid_sample``; ``align_corners=False`` by default (see :mod:`stnkit.grid`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stnkit import transforms as _transforms
from stnkit._checks import (
    check_batch,
    check_choice,
    check_float,
    check_ndim,
    check_same_device,
    check_tensor,
    normalize_size,
    shape_str,
)
from stnkit._ext import fused as _fused
from stnkit.transforms.base import Transform

__all__ = ["MODES", "PADDING_MODES", "sample", "warp"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")


def _check_options(mode: str, padding_mode: str, spatial_dims: int) -> None:
    check_choice(mode, MODES, "mode")
    check_choice(padding_mode, PADDING_MODES, "padding_mode")
    if mode == "bicubic" and spatial_dims == 3:
        raise ValueError("mode='bicubic' supports 4-D input (N, C, H, W) only; use 'bilinear' or 'nearest' for 5-D")


def sample(
    input: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Sample ``input`` at the source coordinates in ``grid`` (eq. 3; bilinear kernel eq. 5, gradients eq. 6-7).

    The bilinear kernel gives sub-gradients to both the input and the grid. A low-precision input (float16,
    bfloat16) is sampled in the grid's float32 and the output cast back, so coordinates never lose precision.

    Args:
        input: images (N, C, H_in, W_in) or volumes (N, C, D_in, H_in, W_in), floating point.
        grid: source coordinates (N, H_out, W_out, 2) as (x, y), or (N, D_out, H_out, W_out, 3) as (x, y, z),
            normalised to [-1, 1], on the same device as ``input``.
        mode: ``"bilinear"`` (eq. 5), ``"nearest"`` (eq. 4) or ``"bicubic"`` (4-D only).
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.
        align_corners: frame convention of ``grid`` (default False, as torch).

    Returns:
        Output of shape (N, C, H_out, W_out) or (N, C, D_out, H_out, W_out), dtype of ``input``.

    Raises:
        TypeError: non-tensor or non-floating-point input/grid.
        ValueError: wrong ranks, batch or device mismatch, unknown mode/padding_mode.

    Example:
        >>> from stnkit.grid import identity_grid
        >>> sample(torch.rand(2, 3, 8, 8), identity_grid((4, 4)).expand(2, -1, -1, -1)).shape
        torch.Size([2, 3, 4, 4])
    """
    check_tensor(input, "input")
    check_tensor(grid, "grid")
    check_float(input, "input")
    check_float(grid, "grid")
    check_ndim(input, (4, 5), "input", "(N, C, H, W) or (N, C, D, H, W)")
    d = input.ndim - 2
    layout = "(N, H_out, W_out, 2)" if d == 2 else "(N, D_out, H_out, W_out, 3)"
    if grid.ndim != input.ndim or grid.shape[-1] != d:
        raise ValueError(f"grid for a {input.ndim}-D input {shape_str(input)} must have shape {layout}; "
                         f"got {shape_str(grid)}")
    check_batch(input, grid, "input", "grid")
    check_same_device(input, grid, "input", "grid")
    _check_options(mode, padding_mode, d)
    return _sample(input, grid, mode, padding_mode, align_corners)


def _sample(input: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    # the reference sampler (F.grid_sample); the fused path of _warp is tested against it
    dtype = torch.promote_types(input.dtype, grid.dtype)
    out = F.grid_sample(input.to(dtype), grid.to(dtype), mode=mode, padding_mode=padding_mode,
                        align_corners=align_corners)
    return out.to(input.dtype)


def warp(
    input: Tensor,
    params: Tensor,
    transform: str | Transform = "affine",
    output_size: int | Sequence[int] | None = None,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Warp ``input`` by a parametric transform: build the sampling grid, then sample (one pass).

    Args:
        input: images (N, C, H_in, W_in), or volumes (N, C, D_in, H_in, W_in) for 3-D transforms.
        params: transformation parameters (N, P) mapping output points to source points, normalised frame.
        transform: a name (``"affine"``, ``"attention"``, ``"translation"``, ``"similarity"``, ``"projective"``,
            ``"tps"``, ``"affine3d"``) or a :class:`~stnkit.transforms.Transform` instance.
        output_size: (H_out, W_out) or (D_out, H_out, W_out); default the input's size. Smaller than the input
            gives a downsampled attention window, larger an upsampled one.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (4-D only).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        align_corners: frame convention (default False, as torch).

    Returns:
        Output of shape (N, C, H_out, W_out) or (N, C, D_out, H_out, W_out).

    Example:
        >>> x = torch.rand(2, 1, 28, 28)
        >>> warp(x, torch.tensor([[0.5, 0.0, 0.0]]).expand(2, -1), "attention", (14, 14)).shape
        torch.Size([2, 1, 14, 14])
    """
    t = _transforms.get(transform)
    check_tensor(input, "input")
    check_float(input, "input")
    d = t.spatial_dims
    layout = "(N, C, H, W)" if d == 2 else "(N, C, D, H, W)"
    if input.ndim != d + 2:
        raise ValueError(f"input for transform={t.name!r} must have shape {layout}; got {shape_str(input)}")
    params = t.check_params(params)
    check_batch(input, params, "input", "params")
    check_same_device(input, params, "input", "params")
    _check_options(mode, padding_mode, d)
    size = input.shape[2:] if output_size is None else normalize_size(output_size, d)
    return _warp(input, t, params, tuple(int(s) for s in size), mode, padding_mode, align_corners)


def _warp(
    input: Tensor, transform: Transform, params: Tensor, size: Sequence[int], mode: str, padding_mode: str,
    align_corners: bool,
) -> Tensor:
    """Grid generator + sampler on validated arguments (also used by ``SpatialTransformer``).

    On CPU, affine-family and projective bilinear warps with zeros/border padding go through the fused C++
    kernel (``stnkit._ext``: coordinates computed on the fly, no grid materialised; built on first use, cached);
    everything else, and any case where the kernel is unavailable or a tracer is active, builds the grid and
    calls ``_sample`` (``F.grid_sample``), the reference path.
    """
    out = _fused.fused_warp(input, transform, params, size, mode, padding_mode, align_corners)
    if out is not None:
        return out
    grid = transform.grid(params, size, align_corners)
    return _sample(input, grid, mode, padding_mode, align_corners)
