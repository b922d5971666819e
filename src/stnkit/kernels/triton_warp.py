"""Triton kernels for the fused warp: bilinear sampling of a matrix warp or of an explicit grid, forward and backward.

Convention:
    ``matrix`` (N, 3, 3) maps output normalised coordinates ``(x, y, 1)`` to input normalised coordinates; with
    ``projective=False`` its last row is taken as ``(0, 0, 1)``, with ``projective=True`` the source point is
    ``(u / w, v / w)`` where ``|w|`` is clamped to ``eps`` with its sign kept (``w = 0`` counts as positive), as
    ``stnkit.transforms.projective``. ``grid`` (N, H_out, W_out, 2) holds input normalised ``(x, y)``. ``padding``
    is 0 zeros, 1 border, 2 reflection, ``align_corners`` as in ``F.grid_sample``; the results equal building the
    grid and calling ``F.grid_sample(mode="bilinear")`` (a NaN coordinate gives NaN at that output pixel).

The matrix gradient is reduced without atomics: each program writes the partial sums of its block of output pixels
(N, blocks, 9), which torch sums. The input gradient uses ``tl.atomic_add``, or, under
``torch.are_deterministic_algorithms_enabled()``, per-tap weights scattered by a deterministic ``index_put_``.
float16/bfloat16 inputs are computed in float32; float64 when the input or the matrix/grid is float64.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is an optional, GPU-only dependency
    triton = None
    tl = None

__all__ = ["available", "sample_backward", "sample_forward", "warp_matrix_backward", "warp_matrix_forward"]

BLOCK = 128


def available() -> bool:
    """Return whether the Triton kernels can run: triton importable and a CUDA device or ``TRITON_INTERPRET=1``.

    Returns:
        True when the kernels can be launched here.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    if triton is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _base(idx, n, ALIGN: tl.constexpr, DTYPE: tl.constexpr):
        i = idx.to(DTYPE)
        size = n.to(DTYPE)
        c = i * (2.0 / tl.maximum(size - 1.0, 1.0)) - 1.0 if ALIGN else (2.0 * i + 1.0) / size - 1.0
        return tl.where(n == 1, 0.0, c)

    @triton.jit
    def _source(coord, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
        s = size.to(coord.dtype)
        if ALIGN:
            ix = (coord + 1.0) * 0.5 * (s - 1.0)
            mult = 0.5 * (s - 1.0) + 0.0 * coord
        else:
            ix = ((coord + 1.0) * s - 1.0) * 0.5
            mult = 0.5 * s + 0.0 * coord
        if PADDING == 2:
            if ALIGN:
                low = 0.0
                span = s - 1.0
            else:
                low = -0.5
                span = s
            rel = ix - low
            neg = rel < 0.0
            rel = tl.where(neg, -rel, rel)
            mult = tl.where(neg, -mult, mult)
            safe_span = tl.maximum(span, 1e-30)
            flips = tl.floor(rel / safe_span)
            extra = rel - flips * safe_span
            odd = (flips - 2.0 * tl.floor(flips * 0.5)) != 0.0
            ix = tl.where(odd, span - extra + low, extra + low)
            mult = tl.where(odd, -mult, mult)
            ix = tl.where(span <= 0.0, 0.0, ix)
            mult = tl.where(span <= 0.0, 0.0, mult)
        if PADDING >= 1:
            top = s - 1.0
            clipped = (ix <= 0.0) | (ix >= top)
            ix = tl.minimum(tl.maximum(ix, 0.0), top)
            mult = tl.where(clipped, 0.0, mult)
        else:
            ix = tl.minimum(tl.maximum(ix, -4.0), s + 3.0)
        return ix, mult

    @triton.jit
    def _coords(
        n,
        offs,
        mask,
        mat_ptr,
        grid_ptr,
        Ho,
        Wo,
        eps,
        FROM_GRID: tl.constexpr,
        ALIGN: tl.constexpr,
        PROJECTIVE: tl.constexpr,
        DTYPE: tl.constexpr,
    ):
        ow = offs % Wo
        oh = offs // Wo
        x = _base(ow, Wo, ALIGN, DTYPE)
        y = _base(oh, Ho, ALIGN, DTYPE)
        if FROM_GRID:
            base = grid_ptr + (n * Ho * Wo + offs) * 2
            gx = tl.load(base, mask=mask, other=0.0).to(DTYPE)
            gy = tl.load(base + 1, mask=mask, other=0.0).to(DTYPE)
            wp = gx * 0.0 + 1.0
            w = wp
        else:
            m = mat_ptr + n * 9
            u = tl.load(m + 0).to(DTYPE) * x + tl.load(m + 1).to(DTYPE) * y + tl.load(m + 2).to(DTYPE)
            v = tl.load(m + 3).to(DTYPE) * x + tl.load(m + 4).to(DTYPE) * y + tl.load(m + 5).to(DTYPE)
            if PROJECTIVE:
                w = tl.load(m + 6).to(DTYPE) * x + tl.load(m + 7).to(DTYPE) * y + tl.load(m + 8).to(DTYPE)
                wa = tl.maximum(tl.abs(w), eps)
                wp = tl.where(w < 0.0, -wa, wa)
                gx = u / wp
                gy = v / wp
            else:
                wp = x * 0.0 + 1.0
                w = wp
                gx = u
                gy = v
        return x, y, w, wp, gx, gy

    @triton.jit
    def _taps(gx, gy, H, W, PADDING: tl.constexpr, ALIGN: tl.constexpr):
        bad = (gx != gx) | (gy != gy)
        ix, mx = _source(tl.where(bad, 0.0, gx), W, PADDING, ALIGN)
        iy, my = _source(tl.where(bad, 0.0, gy), H, PADDING, ALIGN)
        x0f = tl.floor(ix)
        y0f = tl.floor(iy)
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        fx = ix - x0f
        fy = iy - y0f
        in_x0 = (x0 >= 0) & (x0 < W) & (~bad)
        in_x1 = (x0 + 1 >= 0) & (x0 + 1 < W) & (~bad)
        in_y0 = (y0 >= 0) & (y0 < H) & (~bad)
        in_y1 = (y0 + 1 >= 0) & (y0 + 1 < H) & (~bad)
        return bad, mx, my, x0, y0, fx, fy, in_x0, in_x1, in_y0, in_y1

    @triton.jit
    def _forward_kernel(
        inp_ptr,
        mat_ptr,
        grid_ptr,
        out_ptr,
        C,
        H,
        W,
        Ho,
        Wo,
        eps,
        PADDING: tl.constexpr,
        ALIGN: tl.constexpr,
        PROJECTIVE: tl.constexpr,
        FROM_GRID: tl.constexpr,
        DTYPE: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        n = tl.program_id(0).to(tl.int64)
        offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        P = Ho * Wo
        mask = offs < P
        x, y, w_raw, wp, gx, gy = _coords(
            n, offs, mask, mat_ptr, grid_ptr, Ho, Wo, eps, FROM_GRID, ALIGN, PROJECTIVE, DTYPE
        )
        bad, mx, my, x0, y0, fx, fy, in_x0, in_x1, in_y0, in_y1 = _taps(gx, gy, H, W, PADDING, ALIGN)
        w00 = (1.0 - fx) * (1.0 - fy)
        w01 = fx * (1.0 - fy)
        w10 = (1.0 - fx) * fy
        w11 = fx * fy
        idx00 = y0 * W + x0
        for c in range(0, C):
            plane = inp_ptr + (n * C + c) * H * W
            v00 = tl.load(plane + idx00, mask=mask & in_y0 & in_x0, other=0.0).to(DTYPE)
            v01 = tl.load(plane + idx00 + 1, mask=mask & in_y0 & in_x1, other=0.0).to(DTYPE)
            v10 = tl.load(plane + idx00 + W, mask=mask & in_y1 & in_x0, other=0.0).to(DTYPE)
            v11 = tl.load(plane + idx00 + W + 1, mask=mask & in_y1 & in_x1, other=0.0).to(DTYPE)
            val = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11
            val = tl.where(bad, float("nan"), val)
            tl.store(out_ptr + (n * C + c) * P + offs, val, mask=mask)

    @triton.jit
    def _backward_kernel(
        gout_ptr,
        inp_ptr,
        mat_ptr,
        grid_ptr,
        gin_ptr,
        tap_idx_ptr,
        tap_w_ptr,
        gcoord_ptr,
        C,
        H,
        W,
        Ho,
        Wo,
        eps,
        PADDING: tl.constexpr,
        ALIGN: tl.constexpr,
        PROJECTIVE: tl.constexpr,
        FROM_GRID: tl.constexpr,
        NEED_INPUT: tl.constexpr,
        DETERMINISTIC: tl.constexpr,
        NEED_COORD: tl.constexpr,
        DTYPE: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        n = tl.program_id(0).to(tl.int64)
        blk = tl.program_id(1)
        offs = blk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        P = Ho * Wo
        mask = offs < P
        x, y, w_raw, wp, gx, gy = _coords(
            n, offs, mask, mat_ptr, grid_ptr, Ho, Wo, eps, FROM_GRID, ALIGN, PROJECTIVE, DTYPE
        )
        bad, mx, my, x0, y0, fx, fy, in_x0, in_x1, in_y0, in_y1 = _taps(gx, gy, H, W, PADDING, ALIGN)
        w00 = (1.0 - fx) * (1.0 - fy)
        w01 = fx * (1.0 - fy)
        w10 = (1.0 - fx) * fy
        w11 = fx * fy
        idx00 = y0 * W + x0
        m00 = mask & in_y0 & in_x0
        m01 = mask & in_y0 & in_x1
        m10 = mask & in_y1 & in_x0
        m11 = mask & in_y1 & in_x1
        if NEED_INPUT and DETERMINISTIC:
            tbase = (n * 4) * P + offs
            tl.store(tap_idx_ptr + tbase, tl.where(m00, idx00, -1).to(tl.int64), mask=mask)
            tl.store(tap_idx_ptr + tbase + P, tl.where(m01, idx00 + 1, -1).to(tl.int64), mask=mask)
            tl.store(tap_idx_ptr + tbase + 2 * P, tl.where(m10, idx00 + W, -1).to(tl.int64), mask=mask)
            tl.store(tap_idx_ptr + tbase + 3 * P, tl.where(m11, idx00 + W + 1, -1).to(tl.int64), mask=mask)
            tl.store(tap_w_ptr + tbase, w00, mask=mask)
            tl.store(tap_w_ptr + tbase + P, w01, mask=mask)
            tl.store(tap_w_ptr + tbase + 2 * P, w10, mask=mask)
            tl.store(tap_w_ptr + tbase + 3 * P, w11, mask=mask)
        dix = fx * 0.0
        diy = fx * 0.0
        for c in range(0, C):
            g = tl.load(gout_ptr + (n * C + c) * P + offs, mask=mask, other=0.0).to(DTYPE)
            if NEED_INPUT and not DETERMINISTIC:
                gplane = gin_ptr + (n * C + c) * H * W
                tl.atomic_add(gplane + idx00, g * w00, mask=m00)
                tl.atomic_add(gplane + idx00 + 1, g * w01, mask=m01)
                tl.atomic_add(gplane + idx00 + W, g * w10, mask=m10)
                tl.atomic_add(gplane + idx00 + W + 1, g * w11, mask=m11)
            if NEED_COORD:
                plane = inp_ptr + (n * C + c) * H * W
                v00 = tl.load(plane + idx00, mask=m00, other=0.0).to(DTYPE)
                v01 = tl.load(plane + idx00 + 1, mask=m01, other=0.0).to(DTYPE)
                v10 = tl.load(plane + idx00 + W, mask=m10, other=0.0).to(DTYPE)
                v11 = tl.load(plane + idx00 + W + 1, mask=m11, other=0.0).to(DTYPE)
                dix += g * ((v01 - v00) * (1.0 - fy) + (v11 - v10) * fy)
                diy += g * ((v10 - v00) * (1.0 - fx) + (v11 - v01) * fx)
        if NEED_COORD:
            dgx = tl.where(bad, float("nan"), tl.where(mask, dix * mx, 0.0))
            dgy = tl.where(bad, float("nan"), tl.where(mask, diy * my, 0.0))
            if FROM_GRID:
                base = gcoord_ptr + (n * P + offs) * 2
                tl.store(base, dgx, mask=mask)
                tl.store(base + 1, dgy, mask=mask)
            else:
                du = dgx / wp
                dv = dgy / wp
                part = gcoord_ptr + (n * tl.num_programs(1) + blk) * 9
                tl.store(part + 0, tl.sum(du * x, axis=0))
                tl.store(part + 1, tl.sum(du * y, axis=0))
                tl.store(part + 2, tl.sum(du, axis=0))
                tl.store(part + 3, tl.sum(dv * x, axis=0))
                tl.store(part + 4, tl.sum(dv * y, axis=0))
                tl.store(part + 5, tl.sum(dv, axis=0))
                if PROJECTIVE:
                    live = tl.abs(w_raw) >= eps
                    dw = tl.where(live, -(dgx * gx + dgy * gy) / wp, 0.0)
                    dw = tl.where(mask, dw, 0.0)
                    tl.store(part + 6, tl.sum(dw * x, axis=0))
                    tl.store(part + 7, tl.sum(dw * y, axis=0))
                    tl.store(part + 8, tl.sum(dw, axis=0))
                else:
                    zero = tl.sum(du * 0.0, axis=0)
                    tl.store(part + 6, zero)
                    tl.store(part + 7, zero)
                    tl.store(part + 8, zero)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_common(input: Tensor, padding: int) -> None:
    if triton is None:
        raise RuntimeError("triton is not installed; the Triton warp kernels need `pip install triton` and a GPU")
    if input.ndim != 4:
        raise ValueError(f"input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating tensor, got {input.dtype}")
    if padding not in (0, 1, 2):
        raise ValueError(f"padding must be 0 (zeros), 1 (border) or 2 (reflection), got {padding!r}")


def _check_matrix(input: Tensor, matrix: Tensor) -> None:
    if matrix.ndim != 3 or matrix.shape[1:] != (3, 3) or matrix.shape[0] != input.shape[0]:
        raise ValueError(f"matrix must be (N, 3, 3) with N = {input.shape[0]}, got shape {tuple(matrix.shape)}")


def _check_grid(input: Tensor, grid: Tensor) -> None:
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid must be (N, H_out, W_out, 2) with N = {input.shape[0]}, got shape {tuple(grid.shape)}")


def _check_nonempty(input: Tensor, out_h: int, out_w: int) -> None:
    if out_h * out_w > 0 and input.shape[0] > 0 and input.shape[2] * input.shape[3] == 0:
        raise ValueError(
            f"expected input to have non-empty spatial dimensions (as F.grid_sample); got {tuple(input.shape)}"
        )


def _forward(
    input: Tensor,
    coords: Tensor,
    from_grid: bool,
    out_h: int,
    out_w: int,
    padding: int,
    align_corners: bool,
    projective: bool,
    eps: float,
) -> Tensor:
    dtype = _compute_dtype(input, coords)
    n, c, h, w = input.shape
    out = torch.empty(n, c, out_h, out_w, device=input.device, dtype=input.dtype)
    _check_nonempty(input, out_h, out_w)
    if out.numel() == 0:
        return out
    x = input.contiguous()
    m = coords.contiguous()
    grid_fn = (n, triton.cdiv(out_h * out_w, BLOCK))
    _forward_kernel[grid_fn](
        x,
        m,
        m,
        out,
        c,
        h,
        w,
        out_h,
        out_w,
        float(eps),
        PADDING=int(padding),
        ALIGN=bool(align_corners),
        PROJECTIVE=bool(projective),
        FROM_GRID=from_grid,
        DTYPE=_tl_dtype(dtype),
        BLOCK_SIZE=BLOCK,
    )
    return out


def _backward(
    grad_out: Tensor,
    input: Tensor,
    coords: Tensor,
    from_grid: bool,
    out_h: int,
    out_w: int,
    padding: int,
    align_corners: bool,
    projective: bool,
    eps: float,
    need_input: bool,
    need_coord: bool,
) -> tuple[Tensor | None, Tensor | None]:
    dtype = _compute_dtype(input, coords)
    n, c, h, w = input.shape
    p = out_h * out_w
    blocks = triton.cdiv(p, BLOCK) if p > 0 else 0
    deterministic = torch.are_deterministic_algorithms_enabled()
    dev = input.device
    gin = None
    if need_input:
        gin = torch.zeros(n, c, h, w, device=dev, dtype=input.dtype if input.dtype == dtype else dtype)
    gcoord = None
    if need_coord:
        if not from_grid:
            gcoord = torch.zeros(n, blocks, 9, device=dev, dtype=dtype)
        else:
            gcoord = torch.zeros(n, out_h, out_w, 2, device=dev, dtype=dtype)
    if n * p > 0 and h * w > 0 and (need_input or need_coord):
        tap_idx: Tensor | None = None
        tap_w: Tensor | None = None
        if need_input and deterministic:
            tap_idx = torch.empty(n, 4, p, device=dev, dtype=torch.int64)
            tap_w = torch.empty(n, 4, p, device=dev, dtype=dtype)
        x = input.contiguous()
        m = coords.contiguous()
        g = grad_out.contiguous()
        dummy = m
        _backward_kernel[(n, blocks)](
            g,
            x,
            m,
            m,
            gin if gin is not None else dummy,
            tap_idx if tap_idx is not None else dummy,
            tap_w if tap_w is not None else dummy,
            gcoord if gcoord is not None else dummy,
            c,
            h,
            w,
            out_h,
            out_w,
            float(eps),
            PADDING=int(padding),
            ALIGN=bool(align_corners),
            PROJECTIVE=bool(projective),
            FROM_GRID=from_grid,
            NEED_INPUT=bool(need_input),
            DETERMINISTIC=bool(deterministic),
            NEED_COORD=bool(need_coord),
            DTYPE=_tl_dtype(dtype),
            BLOCK_SIZE=BLOCK,
        )
        if gin is not None and tap_idx is not None and tap_w is not None:
            contrib = tap_w[:, None] * g.view(n, c, 1, p).to(dtype)  # (N, C, 4, P)
            flat = tap_idx[:, None] + (torch.arange(n * c, device=dev).view(n, c, 1, 1) * (h * w))
            valid = (tap_idx >= 0)[:, None].expand(n, c, 4, p)
            gin.view(-1).index_put_((flat[valid],), contrib[valid].to(gin.dtype), accumulate=True)
    elif need_input and n * p > 0 and h * w == 0:
        _check_nonempty(input, out_h, out_w)
    if gin is not None:
        gin = gin.to(input.dtype)
    if gcoord is not None:
        if not from_grid:
            gcoord = gcoord.sum(dim=1).view(n, 3, 3)
        gcoord = gcoord.to(coords.dtype)
    return gin, gcoord


def warp_matrix_forward(
    input: Tensor,
    matrix: Tensor,
    out_h: int,
    out_w: int,
    padding: int,
    align_corners: bool,
    projective: bool,
    eps: float,
) -> Tensor:
    """Warp ``input`` by ``matrix`` with bilinear sampling (the fused ``affine_grid`` + ``grid_sample``).

    Args:
        input: (N, C, H, W) image, float32/float64 (float16/bfloat16 computed in float32).
        matrix: (N, 3, 3) map from output normalised ``(x, y, 1)`` to input normalised coordinates.
        out_h: output height.
        out_w: output width.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.
        projective: divide by the third row (``|w|`` clamped to ``eps``, sign kept); else last row ignored.
        eps: smallest ``|w|`` of the perspective division.

    Returns:
        (N, C, out_h, out_w) warped image, dtype of ``input``.

    Raises:
        ValueError: on a wrong shape, a padding code outside 0-2, or an empty spatial input.
        RuntimeError: when triton is not installed.
    """
    _check_common(input, padding)
    _check_matrix(input, matrix)
    return _forward(input, matrix, False, out_h, out_w, padding, align_corners, projective, eps)


def warp_matrix_backward(
    grad_out: Tensor,
    input: Tensor,
    matrix: Tensor,
    out_h: int,
    out_w: int,
    padding: int,
    align_corners: bool,
    projective: bool,
    eps: float,
    need_input: bool,
    need_matrix: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Return the gradients of :func:`warp_matrix_forward` w.r.t. ``input`` and ``matrix``.

    Args:
        grad_out: (N, C, out_h, out_w) gradient of the output.
        input: (N, C, H, W) image given to the forward.
        matrix: (N, 3, 3) matrix given to the forward.
        out_h: output height.
        out_w: output width.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.
        projective: as in the forward.
        eps: as in the forward.
        need_input: compute the input gradient (no buffer is allocated otherwise).
        need_matrix: compute the matrix gradient (deterministic per-block partials, no atomics).

    Returns:
        ``(grad_input (N, C, H, W) or None, grad_matrix (N, 3, 3) or None)``.

    Raises:
        ValueError: on a wrong shape or a padding code outside 0-2.
        RuntimeError: when triton is not installed.
    """
    _check_common(input, padding)
    _check_matrix(input, matrix)
    return _backward(
        grad_out, input, matrix, False, out_h, out_w, padding, align_corners, projective, eps, need_input, need_matrix
    )


def sample_forward(input: Tensor, grid: Tensor, padding: int, align_corners: bool) -> Tensor:
    """Sample ``input`` bilinearly at ``grid`` (``F.grid_sample`` with ``mode="bilinear"``).

    Args:
        input: (N, C, H, W) image.
        grid: (N, H_out, W_out, 2) input normalised ``(x, y)``.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.

    Returns:
        (N, C, H_out, W_out) sampled image, dtype of ``input``.

    Raises:
        ValueError: on a wrong shape, a padding code outside 0-2, or an empty spatial input.
        RuntimeError: when triton is not installed.
    """
    _check_common(input, padding)
    _check_grid(input, grid)
    return _forward(input, grid, True, grid.shape[1], grid.shape[2], padding, align_corners, False, 0.0)


def sample_backward(
    grad_out: Tensor, input: Tensor, grid: Tensor, padding: int, align_corners: bool, need_input: bool, need_grid: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Return the gradients of :func:`sample_forward` w.r.t. ``input`` and ``grid``.

    Args:
        grad_out: (N, C, H_out, W_out) gradient of the output.
        input: (N, C, H, W) image given to the forward.
        grid: (N, H_out, W_out, 2) grid given to the forward.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.
        need_input: compute the input gradient.
        need_grid: compute the grid gradient (each grid point written by one program, no atomics).

    Returns:
        ``(grad_input (N, C, H, W) or None, grad_grid (N, H_out, W_out, 2) or None)``.

    Raises:
        ValueError: on a wrong shape or a padding code outside 0-2.
        RuntimeError: when triton is not installed.
    """
    _check_common(input, padding)
    _check_grid(input, grid)
    return _backward(
        grad_out,
        input,
        grid,
        True,
        grid.shape[1],
        grid.shape[2],
        padding,
        align_corners,
        False,
        0.0,
        need_input,
        need_grid,
    )
