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

from stnkit import kernels
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
from stnkit.grid import identity_grid
from stnkit.transforms.base import MatrixTransform, Transform, grid_dtype, no_autocast
from stnkit.transforms.projective import PERSPECTIVE_EPS, Projective

__all__ = [
    "MAX_ANTIALIAS_FACTOR", "MODES", "PADDING_MODES", "antialias_factors", "check_options", "sample", "warp",
    "warp_checked",
]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection", "fill")
#: Largest supersampling factor per axis of ``warp(..., antialias=True)`` (64 samples per output pixel in 2-D).
MAX_ANTIALIAS_FACTOR = 8


def check_options(
    mode: str, padding_mode: str, spatial_dims: int, fill_value: float | Tensor | None = None
) -> None:
    """Validate sampler options (shape/type only, no tensor values are read).

    Args:
        mode: one of :data:`MODES`.
        padding_mode: one of :data:`PADDING_MODES`.
        spatial_dims: 2 for images, 3 for volumes (bicubic is 2-D only).
        fill_value: a number, or a tensor of shape () or (C,); only with ``padding_mode="fill"``.

    Raises:
        ValueError: unknown mode/padding_mode, bicubic for 3-D, ``fill_value`` without ``padding_mode="fill"``,
            or a tensor ``fill_value`` of more than one dimension.
        TypeError: a ``fill_value`` that is neither a number nor a floating-point tensor.

    Example:
        >>> check_options("bilinear", "fill", 2, fill_value=0.5)
    """
    check_choice(mode, MODES, "mode")
    check_choice(padding_mode, PADDING_MODES, "padding_mode")
    if mode == "bicubic" and spatial_dims == 3:
        raise ValueError("mode='bicubic' supports 4-D input (N, C, H, W) only; use 'bilinear' or 'nearest' for 5-D")
    if fill_value is None:
        return
    if padding_mode != "fill":
        raise ValueError(f"fill_value is only used with padding_mode='fill'; got padding_mode={padding_mode!r}")
    if isinstance(fill_value, Tensor):
        check_float(fill_value, "fill_value")
        if fill_value.ndim > 1:
            raise ValueError(f"fill_value must be a number or a tensor of shape (C,); got {shape_str(fill_value)}")
    elif isinstance(fill_value, bool) or not isinstance(fill_value, (int, float)):
        raise TypeError(f"fill_value must be a number or a tensor of shape (C,); got {type(fill_value).__name__}")


_check_options = check_options  # the name modules and the fast paths used before it was public


def _fill_offset(input: Tensor, fill_value: float | Tensor | None, padding_mode: str) -> float | Tensor | None:
    """Return the fill colour broadcastable to ``input`` (1, C, 1, ...), or None when not filling."""
    if padding_mode != "fill":
        return None
    if not isinstance(fill_value, Tensor):
        return 0.0 if fill_value is None else float(fill_value)
    check_same_device(input, fill_value, "input", "fill_value")
    c = input.shape[1]
    if fill_value.ndim == 1 and fill_value.shape[0] != c:
        raise ValueError(f"fill_value must have shape ({c},) (one value per channel of input {shape_str(input)}) "
                         f"or be a number; got {shape_str(fill_value)}")
    return fill_value.to(input.dtype).reshape(1, -1, *([1] * (input.ndim - 2)))  # (1, C or 1, 1, 1[, 1])


def sample(
    input: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    fill_value: float | Tensor | None = None,
) -> Tensor:
    """Sample ``input`` at the source coordinates in ``grid`` (eq. 3; bilinear kernel eq. 5, gradients eq. 6-7).

    The bilinear kernel gives sub-gradients to both the input and the grid. A low-precision input (float16,
    bfloat16) is sampled in the grid's float32 and the output cast back, so coordinates never lose precision.
    A grid of batch 1 is shared by all N inputs (broadcast, no copy).

    ``padding_mode="fill"`` reads ``fill_value`` outside the input (a constant colour, per channel or not). Zero
    padding is not the background of a normalised input (zero is its mean colour, not black), so a transformer
    that zooms out pastes mean-grey borders that a localisation net learns to exploit (pytorch/tutorials#1117);
    filling with the normalised background value avoids that.

    Args:
        input: images (N, C, H_in, W_in) or volumes (N, C, D_in, H_in, W_in), floating point.
        grid: source coordinates (N, H_out, W_out, 2) as (x, y), or (N, D_out, H_out, W_out, 3) as (x, y, z),
            normalised to [-1, 1], on the same device as ``input``; batch 1 applies to every input.
        mode: ``"bilinear"`` (eq. 5), ``"nearest"`` (eq. 4) or ``"bicubic"`` (4-D only).
        padding_mode: value outside the input: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"``.
        align_corners: frame convention of ``grid`` (default False, as torch).
        fill_value: with ``padding_mode="fill"`` only: a number or a tensor (C,) of per-channel values (default
            0); differentiable when it is a tensor.

    Returns:
        Output of shape (N, C, H_out, W_out) or (N, C, D_out, H_out, W_out), dtype of ``input``.

    Raises:
        TypeError: non-tensor or non-floating-point input/grid/fill_value.
        ValueError: wrong ranks, batch or device mismatch, unknown mode/padding_mode, ``fill_value`` without
            ``padding_mode="fill"`` or of a shape other than (C,).

    Example:
        >>> from stnkit.grid import identity_grid
        >>> sample(torch.rand(2, 3, 8, 8), identity_grid((4, 4)).expand(2, -1, -1, -1)).shape
        torch.Size([2, 3, 4, 4])
        >>> sample(torch.rand(2, 3, 8, 8), 2 * identity_grid((4, 4)), padding_mode="fill", fill_value=0.5)[0, 0, 0]
        tensor([0.5000, 0.5000, 0.5000, 0.5000])
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
    if grid.shape[0] == 1 and input.shape[0] != 1:
        grid = grid.expand(input.shape[0], *grid.shape[1:])  # one grid for every input
    check_batch(input, grid, "input", "grid")
    check_same_device(input, grid, "input", "grid")
    check_options(mode, padding_mode, d, fill_value)
    offset = _fill_offset(input, fill_value, padding_mode)
    if offset is None:
        return _sample_path(input, grid, mode, padding_mode, align_corners)
    # constant padding as sample_zeros(x - f) + f: exact per tap, because every kernel's weights (bilinear,
    # nearest, bicubic) sum to 1 and zero padding drops the taps outside the input, which then read f; being
    # built on the zeros sampler, every sampling path (reference, fast) gets it
    return _sample_path(input - offset, grid, mode, "zeros", align_corners) + offset


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
    fill_value: float | Tensor | None = None,
    antialias: bool = False,
) -> Tensor:
    """Warp ``input`` by a parametric transform: build the sampling grid, then sample (one pass).

    ``antialias=True`` averages the warp over each output pixel's footprint for warps that downsample: every
    output pixel is sampled at s x s (x s) sub-pixel positions spread evenly over its extent and averaged, with
    ``s = ceil(input size / output size)`` per axis, at most :data:`MAX_ANTIALIAS_FACTOR` (the factor depends on
    shapes only, never on the parameters' values, so nothing synchronises the device). Without it a bilinear
    downsampling by more than 2x reads only a few input pixels per output pixel and aliases (the paper's
    attention crops, 120x120 -> 20x20). ``s = 1`` on every axis is exactly the plain warp.

    Args:
        input: images (N, C, H_in, W_in), or volumes (N, C, D_in, H_in, W_in) for 3-D transforms.
        params: transformation parameters (N, P) mapping output points to source points, normalised frame;
            batch 1 applies the same transform to all N inputs.
        transform: a name (``"affine"``, ``"attention"``, ``"translation"``, ``"similarity"``, ``"projective"``,
            ``"tps"``, ``"affine3d"``) or a :class:`~stnkit.transforms.Transform` instance.
        output_size: (H_out, W_out) or (D_out, H_out, W_out); default the input's size. Smaller than the input
            gives a downsampled attention window, larger an upsampled one. At most 2**31 - 1 output points.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (4-D only).
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"`` (the constant ``fill_value``;
            see :func:`sample` for why zeros are not the background of a normalised input).
        align_corners: frame convention (default False, as torch).
        fill_value: with ``padding_mode="fill"`` only: a number or a per-channel tensor (C,) (default 0).
        antialias: supersample each output pixel's footprint (for downsampling warps).

    Returns:
        Output of shape (N, C, H_out, W_out) or (N, C, D_out, H_out, W_out).

    Raises:
        TypeError: non-tensor or non-floating-point input/params, non-integer sizes.
        ValueError: wrong shapes, batch or device mismatch, unknown options, an empty or too large output_size.

    Example:
        >>> x = torch.rand(2, 1, 28, 28)
        >>> warp(x, torch.tensor([[0.5, 0.0, 0.0]]), "attention", (14, 14)).shape
        torch.Size([2, 1, 14, 14])
        >>> warp(x, torch.tensor([[1.0, 0.0, 0.0]]), "attention", (7, 7), antialias=True).shape
        torch.Size([2, 1, 7, 7])
    """
    t = _transforms.get(transform)
    check_tensor(input, "input")
    check_float(input, "input")
    d = t.spatial_dims
    layout = "(N, C, H, W)" if d == 2 else "(N, C, D, H, W)"
    if input.ndim != d + 2:
        raise ValueError(f"input for transform={t.name!r} must have shape {layout}; got {shape_str(input)}")
    params = t.check_params(params)
    if params.shape[0] == 1 and input.shape[0] != 1:
        params = params.expand(input.shape[0], -1)  # one transform for every input
    check_batch(input, params, "input", "params")
    check_same_device(input, params, "input", "params")
    check_options(mode, padding_mode, d, fill_value)
    size = normalize_size(tuple(input.shape[2:]) if output_size is None else output_size, d)
    return warp_checked(input, t, params, size, mode, padding_mode, align_corners, fill_value=fill_value,
                        antialias=antialias)


def warp_checked(
    input: Tensor, transform: Transform, params: Tensor, size: Sequence[int], mode: str, padding_mode: str,
    align_corners: bool, *, fill_value: float | Tensor | None = None, antialias: bool = False, fast: bool = True,
) -> Tensor:
    """:func:`warp` on arguments already validated (``params`` (N, P), ``size`` a tuple); for layers.

    :class:`~stnkit.SpatialTransformer` validates its options once at construction and calls this per forward.
    It chooses the reference composition (grid + ``F.grid_sample``) while exporting to ONNX, whose exporter
    cannot translate the fast paths' custom ops, and when ``fast=False`` (the same values by the reference
    formulas, differentiated by autograd: what tests and benchmarks compare the fast paths against).

    Example:
        >>> t = _transforms.get("affine")
        >>> warp_checked(torch.rand(2, 1, 8, 8), t, t.identity().expand(2, -1), (4, 4), "bilinear", "zeros",
        ...              False).shape
        torch.Size([2, 1, 4, 4])
    """
    offset = _fill_offset(input, fill_value, padding_mode)
    pad = "zeros" if offset is not None else padding_mode
    factors = antialias_factors(tuple(input.shape[2:]), size, align_corners) if antialias else (1,) * len(size)
    # constant padding as warp_zeros(x - f) + f: exact per tap, because every kernel's weights (bilinear, nearest,
    # bicubic) sum to 1 and zero padding drops the taps outside the input, which then read f
    x = input if offset is None else input - offset
    if all(f == 1 for f in factors):
        out = _warp_path(x, transform, params, tuple(size), mode, pad, align_corners, fast)
    else:
        out = _supersampled(x, transform, params, tuple(size), factors, mode, pad, align_corners, fast)
    return out if offset is None else out + offset


def _warp_path(
    input: Tensor, transform: Transform, params: Tensor, size: tuple[int, ...], mode: str, padding_mode: str,
    align_corners: bool, fast: bool = True,
) -> Tensor:
    if torch.onnx.is_in_onnx_export():  # the exporters cannot translate the fast paths' custom ops
        return _sample_path(input, transform.grid(params, size, align_corners), mode, padding_mode, align_corners)
    return _warp(input, transform, params, size, mode, padding_mode, align_corners, fast=fast)


def _sample_path(input: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    if not torch.onnx.is_in_onnx_export():
        return _sample(input, grid, mode, padding_mode, align_corners)
    # ONNX export: plain F.grid_sample (ONNX GridSample) in the promoted dtype, whatever _sample dispatches to
    dtype = torch.promote_types(input.dtype, grid.dtype)
    out = F.grid_sample(input.to(dtype), grid.to(dtype), mode=mode, padding_mode=padding_mode,
                        align_corners=align_corners)
    return out.to(input.dtype)


def antialias_factors(
    input_size: Sequence[int], output_size: Sequence[int], align_corners: bool = False
) -> tuple[int, ...]:
    """Return the per-axis supersampling factors of ``warp(..., antialias=True)``.

    ``s = ceil(input / output)`` per axis, clamped to [1, :data:`MAX_ANTIALIAS_FACTOR`]; 1 on an axis of one
    output pixel under ``align_corners=True`` (that frame gives such a pixel no extent).

    Example:
        >>> antialias_factors((120, 120), (20, 30))
        (6, 4)
    """
    out = []
    for i, o in zip(input_size, output_size, strict=True):
        s = 1 if (align_corners and o == 1) else -(-int(i) // int(o))
        out.append(max(1, min(MAX_ANTIALIAS_FACTOR, s)))
    return tuple(out)


def _supersampled(
    input: Tensor, transform: Transform, params: Tensor, size: tuple[int, ...], factors: tuple[int, ...],
    mode: str, padding_mode: str, align_corners: bool, fast: bool = True,
) -> Tensor:
    # align_corners=False: the pixel centres of the (s*H, s*W) grid are the s x s sub-pixel centres inside each
    # output pixel's extent, so the fine warp averaged over s x s blocks is the footprint average
    fine = tuple(o * f for o, f in zip(size, factors, strict=True))
    pool = F.avg_pool2d if len(size) == 2 else F.avg_pool3d
    if not align_corners:
        out = _warp_path(input, transform, params, fine, mode, padding_mode, align_corners, fast)  # (N, C, *fine)
        return pool(out, factors, factors)
    # align_corners=True: output pixel i (of n) spans its centre -1 + 2i/(n-1) +- 1/(n-1); its sub-pixel centres
    # are the align_corners=False centres of the fine grid scaled by n/(n-1) (n = 1: the single centre, 0)
    dt = grid_dtype(params.dtype)
    scale = torch.tensor([o / (o - 1) if o > 1 else 1.0 for o in size[::-1]], dtype=dt, device=params.device)
    points = identity_grid(fine, False, device=params.device, dtype=dt).reshape(-1, len(size)) * scale  # (M, d)
    grid = transform.transform_points(params, points).reshape(params.shape[0], *fine, len(size))  # (N, *fine, d)
    out = _sample_path(input, grid, mode, padding_mode, align_corners)  # (N, C, *fine)
    return pool(out, factors, factors)


def _warp(
    input: Tensor, transform: Transform, params: Tensor, size: Sequence[int], mode: str, padding_mode: str,
    align_corners: bool, *, fast: bool = True,
) -> Tensor:
    """Grid generator + sampler on validated arguments (also used by ``SpatialTransformer``).

    With ``fast``, 2-D matrix transforms (affine family, projective) with bilinear zeros/border padding (CUDA:
    also reflection) go through the fused op ``stnkit::warp_matrix`` (:mod:`stnkit.kernels`: coordinates
    computed on the fly, no grid materialised; traceable by compile/export, differentiable to any order);
    everything else builds the grid (fast grid paths) and calls ``_sample`` (``F.grid_sample``). ``fast=False``
    is the reference path: the reference grid formulas and ``F.grid_sample``, differentiated by autograd.
    """
    if fast and _fused_applies(input, transform, mode, padding_mode):
        assert isinstance(transform, MatrixTransform)  # _fused_applies checked it; narrows for to_matrix
        # coordinates in float32 (float64 for float64 params), sampled in the promotion with the input's dtype
        dtype = torch.promote_types(input.dtype, grid_dtype(params.dtype))
        with no_autocast(params.device):
            matrix = transform.to_matrix(params.to(dtype))  # (N, 3, 3) output -> source, normalised frame
            out = kernels.warp_matrix(input.to(dtype), matrix, size, padding_mode, align_corners,
                                      projective=isinstance(transform, Projective), eps=PERSPECTIVE_EPS)
        return out.to(input.dtype)
    grid = transform.grid(params, size, align_corners, fast=fast)
    return _sample(input, grid, mode, padding_mode, align_corners)


def _fused_applies(input: Tensor, transform: Transform, mode: str, padding_mode: str) -> bool:
    return (
        input.ndim == 4
        and mode == "bilinear"
        and isinstance(transform, MatrixTransform)
        and transform.spatial_dims == 2
        and kernels.supports(input.device, padding_mode, projective=isinstance(transform, Projective))
        and not torch.jit.is_tracing()  # TorchScript records plain ATen ops, never the custom op
        and not torch.jit.is_scripting()
    )
