"""Regular output grids and the pixel <-> normalised coordinate frames.

Convention:
    Normalised coordinates are ``(x, y[, z])`` in [-1, 1], x along width, as ``F.grid_sample`` reads them.
    ``align_corners=False`` (stnkit's default, torch's too): -1 and 1 are the outer *edges* of the border pixels,
    so pixel centre ``i`` of ``W`` sits at ``(2 i + 1) / W - 1``. ``align_corners=True``: -1 and 1 are the border
    pixel *centres*, ``2 i / (W - 1) - 1``. Pixel coordinates put pixel centre ``i`` at ``i`` (OpenCV, kornia).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit._checks import check_ndim, normalize_size

__all__ = [
    "base_coords",
    "denormalize_matrix",
    "denormalize_points",
    "identity_grid",
    "normalize_matrix",
    "normalize_points",
    "normalization_matrix",
]


def base_coords(
    n: int, align_corners: bool = False, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Return the normalised coordinates of ``n`` pixel centres along one axis.

    Args:
        n: number of pixels along the axis.
        align_corners: frame convention (see module docstring).
        device: device of the result.
        dtype: dtype of the result (default float32).

    Returns:
        Tensor of shape (n,). For ``n == 1`` the single centre is 0 in both conventions (as ``F.affine_grid``).

    Example:
        >>> base_coords(4)
        tensor([-0.7500, -0.2500,  0.2500,  0.7500])
    """
    dtype = dtype or torch.float32
    if n == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    idx = torch.arange(n, device=device, dtype=torch.float64)
    coords = idx * (2.0 / (n - 1)) - 1.0 if align_corners else (2.0 * idx + 1.0) / n - 1.0
    return coords.to(dtype)


def identity_grid(
    output_size: int | Sequence[int],
    align_corners: bool = False,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Return the regular grid of output pixel centres in normalised coordinates.

    Args:
        output_size: (H_out, W_out) for 2-D or (D_out, H_out, W_out) for 3-D.
        align_corners: frame convention (see module docstring).
        device: device of the result.
        dtype: dtype of the result (default float32).

    Returns:
        Grid of shape (1, H_out, W_out, 2) with last dim (x, y), or (1, D_out, H_out, W_out, 3) with (x, y, z).

    Example:
        >>> identity_grid((3, 5)).shape
        torch.Size([1, 3, 5, 2])
    """
    ndim = 3 if not isinstance(output_size, int) and len(output_size) == 3 else 2
    size = normalize_size(output_size, ndim)
    axes = [base_coords(s, align_corners, device=device, dtype=dtype) for s in size]  # (D,) (H,) (W,) order
    mesh = torch.meshgrid(*axes, indexing="ij")  # each (D, H, W) or (H, W)
    return torch.stack(mesh[::-1], dim=-1).unsqueeze(0)  # (1, [D,] H, W, ndim) with (x, y[, z])


def normalization_matrix(
    size: Sequence[int], align_corners: bool = False, *, device: torch.device | None = None, dtype=torch.float64
) -> Tensor:
    """Return the homogeneous matrix ``norm_from_px`` that maps pixel coordinates to normalised ones.

    Args:
        size: spatial size (H, W) or (D, H, W) of the image whose frame is meant.
        align_corners: frame convention (see module docstring).
        device: device of the result.
        dtype: dtype of the result (default float64).

    Returns:
        Matrix of shape (3, 3) for 2-D or (4, 4) for 3-D, acting on (x, y[, z], 1).

    Example:
        >>> normalization_matrix((2, 4))[0]
        tensor([ 0.5000,  0.0000, -0.7500], dtype=torch.float64)
    """
    size = normalize_size(tuple(size), len(size), name="size")
    ndim = len(size)
    m = torch.eye(ndim + 1, device=device, dtype=dtype)
    for axis, n in enumerate(reversed(size)):  # x uses W, y uses H, z uses D
        if align_corners:
            scale, shift = (2.0 / (n - 1), -1.0) if n > 1 else (1.0, 0.0)
        else:
            scale, shift = 2.0 / n, 1.0 / n - 1.0
        m[axis, axis] = scale
        m[axis, ndim] = shift
    return m


def normalize_matrix(
    src_from_dst_px: Tensor, src_size: Sequence[int], dst_size: Sequence[int], align_corners: bool = False
) -> Tensor:
    """Convert a pixel-frame matrix (OpenCV/kornia convention) to the normalised frame stnkit's grids use.

    Args:
        src_from_dst_px: matrices mapping output (dst) pixel coordinates to source pixel coordinates, shape
            (B, 2, 3) or (B, 3, 3) for 2-D, (B, 3, 4) or (B, 4, 4) for 3-D. OpenCV's ``warpAffine`` and kornia's
            ``warp_affine`` take the opposite direction ``dst_from_src``: invert those first.
        src_size: spatial size of the source image, (H_in, W_in) or (D_in, H_in, W_in).
        dst_size: spatial size of the output, (H_out, W_out) or (D_out, H_out, W_out).
        align_corners: the frame the normalised matrix is meant for.

    Returns:
        ``src_from_dst`` in normalised coordinates, same shape as the input.

    Example:
        >>> m = torch.eye(3)[None]
        >>> normalize_matrix(m, (28, 28), (14, 14))[0, 0]
        tensor([ 0.5000,  0.0000, -0.5000])
    """
    check_ndim(src_from_dst_px, (3,), "src_from_dst_px", "(B, 2, 3), (B, 3, 3), (B, 3, 4) or (B, 4, 4)")
    return _change_frame(src_from_dst_px, src_size, dst_size, align_corners, to_norm=True)


def denormalize_matrix(
    src_from_dst: Tensor, src_size: Sequence[int], dst_size: Sequence[int], align_corners: bool = False
) -> Tensor:
    """Convert a normalised-frame matrix to pixel coordinates (the inverse of :func:`normalize_matrix`).

    Args:
        src_from_dst: normalised output->source matrices, shape (B, 2, 3), (B, 3, 3), (B, 3, 4) or (B, 4, 4).
        src_size: spatial size of the source image.
        dst_size: spatial size of the output.
        align_corners: the frame ``src_from_dst`` was written for.

    Returns:
        ``src_from_dst_px`` mapping output pixel coordinates to source pixel coordinates, same shape.

    Example:
        >>> m = torch.eye(3)[None]
        >>> denormalize_matrix(m, (28, 28), (14, 14))[0, 0]
        tensor([2.0000, 0.0000, 0.5000])
    """
    check_ndim(src_from_dst, (3,), "src_from_dst", "(B, 2, 3), (B, 3, 3), (B, 3, 4) or (B, 4, 4)")
    return _change_frame(src_from_dst, src_size, dst_size, align_corners, to_norm=False)


def _change_frame(m: Tensor, src_size, dst_size, align_corners: bool, to_norm: bool) -> Tensor:
    rows, cols = m.shape[-2:]
    ndim = cols - 1
    if ndim not in (2, 3) or rows not in (ndim, ndim + 1):
        raise ValueError(
            f"matrix must have shape (B, 2, 3), (B, 3, 3), (B, 3, 4) or (B, 4, 4); got {tuple(m.shape)}"
        )
    if len(src_size) != ndim or len(dst_size) != ndim:
        raise ValueError(f"src_size and dst_size must have {ndim} entries for a {rows}x{cols} matrix")
    full = m
    if rows == ndim:  # append the homogeneous row (0, ..., 0, 1)
        last = torch.zeros(m.shape[0], 1, cols, device=m.device, dtype=m.dtype)
        last[..., -1] = 1.0
        full = torch.cat([m, last], dim=1)  # (B, ndim+1, ndim+1)
    n_src = normalization_matrix(src_size, align_corners, device=m.device, dtype=torch.float64)
    n_dst = normalization_matrix(dst_size, align_corners, device=m.device, dtype=torch.float64)
    if to_norm:  # src_norm_from_dst_norm = N_src @ M_px @ N_dst^-1
        out = n_src @ full.double() @ torch.linalg.inv(n_dst)
    else:  # src_px_from_dst_px = N_src^-1 @ M_norm @ N_dst
        out = torch.linalg.inv(n_src) @ full.double() @ n_dst
    return out[:, :rows].to(m.dtype)


def normalize_points(points_px: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Map pixel coordinates to normalised coordinates.

    Args:
        points_px: points of shape (..., 2) as (x, y) or (..., 3) as (x, y, z), in pixels (centre of pixel i at i).
        size: spatial size (H, W) or (D, H, W) of the image.
        align_corners: frame convention.

    Returns:
        Points of the same shape in normalised coordinates.

    Example:
        >>> normalize_points(torch.tensor([[0.0, 0.0]]), (4, 4))
        tensor([[-0.7500, -0.7500]])
    """
    n = normalization_matrix(size, align_corners, device=points_px.device, dtype=points_px.dtype)
    d = points_px.shape[-1]
    return points_px * n.diagonal()[:d] + n[:d, d]


def denormalize_points(points: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Map normalised coordinates to pixel coordinates (inverse of :func:`normalize_points`).

    Args:
        points: points of shape (..., 2) as (x, y) or (..., 3) as (x, y, z), normalised.
        size: spatial size (H, W) or (D, H, W) of the image.
        align_corners: frame convention.

    Returns:
        Points of the same shape in pixel coordinates.

    Example:
        >>> denormalize_points(torch.tensor([[-1.0, 1.0]]), (4, 4))
        tensor([[-0.5000,  3.5000]])
    """
    n = normalization_matrix(size, align_corners, device=points.device, dtype=points.dtype)
    d = points.shape[-1]
    return (points - n[:d, d]) / n.diagonal()[:d]
