"""Triton kernels of the fused bilinear warp: matrix warps (affine, projective) and explicit grids.

Convention:
    ``matrix`` (N, 3, 3) maps output normalised coordinates ``(x, y, 1)`` to input normalised coordinates (output ->
    source, as ``F.affine_grid``); affine ignores its last row, projective divides by ``w = m20 x + m21 y + m22``
    with ``|w|`` clamped to ``eps`` and its sign kept (``w = 0`` counts as positive). Pixel centres and the
    ``align_corners`` frames are those of ``F.grid_sample``; padding codes: 0 zeros, 1 border, 2 reflection. The
    coordinate rules (NaN coordinates clipped to 0 under border/reflection, zero gradient at a clipped coordinate,
    the last pixel centre included) follow torch's CPU ``grid_sample`` kernel.

    Coordinates and accumulations run in float64 when the input or matrix/grid is float64, float32 otherwise
    (float16/bfloat16 inputs are read and written in their dtype). The matrix and grid gradients are reduced per
    block of output pixels without atomics (deterministic); the input gradient uses atomics, or per-tap
    contributions summed by ``index_put_`` under ``torch.are_deterministic_algorithms_enabled()``.

    The kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was
    imported (the Triton interpreter, for tests).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # optional, GPU-only dependency
    triton = None
    tl = None

__all__ = ["available", "sample_backward", "sample_forward", "warp_matrix_backward", "warp_matrix_forward"]

BLOCK = 128
_TARGET_PROGRAMS = 512
_PADDINGS = (0, 1, 2)


def available() -> bool:
    """Return whether the kernels can run: triton importable and a CUDA device (or ``TRITON_INTERPRET=1``).

    Example:
        >>> isinstance(available(), bool)
        True
    """
    if triton is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _source(g, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
        if ALIGN:
            scale = (size - 1) * 0.5
            x = (g + 1) * scale
        else:
            scale = size * 0.5
            x = (g + 1) * scale - 0.5
        mult = tl.zeros_like(x) + scale
        if PADDING == 2:
            if ALIGN:
                low = 0.0
                span2 = tl.maximum((size - 1) * 2.0, 1.0)
            else:
                low = -0.5
                span2 = size * 2.0
            v = x - low
            a = tl.abs(v)
            extra = a - tl.floor(a / span2) * span2
            refl = span2 - extra
            more = extra > refl
            x = tl.where(more, refl, extra) + low
            mult = tl.where(more != (v < 0), -mult, mult)
        if PADDING != 0:
            top = (size - 1) * 1.0
            mult = tl.where((x > 0) & (x < top), mult, 0.0)
            x = tl.where(x > 0, x, 0.0)
            x = tl.where(x < top, x, top)
        return x, mult

    @triton.jit
    def _matrix_coords(mat_ptr, xs_ptr, ys_ptr, eps_ptr, n, offs, pmask, Wo, PROJECTIVE: tl.constexpr):
        m = mat_ptr + n * 9
        xo = tl.load(xs_ptr + offs % Wo, mask=pmask, other=0.0)
        yo = tl.load(ys_ptr + offs // Wo, mask=pmask, other=0.0)
        u = tl.load(m + 0) * xo + tl.load(m + 1) * yo + tl.load(m + 2)
        v = tl.load(m + 3) * xo + tl.load(m + 4) * yo + tl.load(m + 5)
        if PROJECTIVE:
            w = tl.load(m + 6) * xo + tl.load(m + 7) * yo + tl.load(m + 8)
            eps = tl.load(eps_ptr)
            wa = tl.abs(w)
            live = wa >= eps
            wa = tl.where(wa < eps, eps, wa)
            wd = tl.where(w < 0, -wa, wa)
            u = u / wd
            v = v / wd
        else:
            wd = tl.zeros_like(u) + 1.0
            live = wd > 0
        return u, v, xo, yo, wd, live

    @triton.jit
    def _taps(x, y, H, W):
        x0f = tl.floor(x)
        y0f = tl.floor(y)
        wx1 = x - x0f
        wy1 = y - y0f
        wx0 = 1.0 - wx1
        wy0 = 1.0 - wy1
        okx0 = (x0f >= 0) & (x0f <= W - 1)
        okx1 = (x0f >= -1) & (x0f <= W - 2)
        oky0 = (y0f >= 0) & (y0f <= H - 1)
        oky1 = (y0f >= -1) & (y0f <= H - 2)
        xi = tl.where(okx0 | okx1, x0f, 0.0).to(tl.int32)
        yi = tl.where(oky0 | oky1, y0f, 0.0).to(tl.int32)
        off = yi * W + xi
        return wx0, wx1, wy0, wy1, okx0, okx1, oky0, oky1, off

    @triton.jit
    def _load_coords(coord_ptr, xs_ptr, ys_ptr, eps_ptr, n, offs, pmask, P, Wo,
                     FROM_GRID: tl.constexpr, PROJECTIVE: tl.constexpr):
        if FROM_GRID:
            base = n.to(tl.int64) * P * 2
            gx = tl.load(coord_ptr + base + offs * 2, mask=pmask, other=0.0)
            gy = tl.load(coord_ptr + base + offs * 2 + 1, mask=pmask, other=0.0)
            one = tl.zeros_like(gx) + 1.0
            return gx, gy, one, one, one, one > 0
        return _matrix_coords(coord_ptr, xs_ptr, ys_ptr, eps_ptr, n, offs, pmask, Wo, PROJECTIVE)

    @triton.jit(do_not_specialize=["C", "H", "W", "Ho", "Wo", "c_per", "groups"])
    def _fwd_kernel(inp_ptr, out_ptr, coord_ptr, xs_ptr, ys_ptr, eps_ptr, C, H, W, Ho, Wo, c_per, groups,
                    FROM_GRID: tl.constexpr, PROJECTIVE: tl.constexpr, PADDING: tl.constexpr,
                    ALIGN: tl.constexpr, BLOCK: tl.constexpr):
        pid_p = tl.program_id(0)
        pid_ng = tl.program_id(1)
        n = pid_ng // groups
        grp = pid_ng % groups
        P = Ho * Wo
        offs = pid_p * BLOCK + tl.arange(0, BLOCK)
        pmask = offs < P
        gx, gy, xo, yo, wd, live = _load_coords(coord_ptr, xs_ptr, ys_ptr, eps_ptr, n, offs, pmask, P, Wo,
                                                FROM_GRID, PROJECTIVE)
        x, multx = _source(gx, W, PADDING, ALIGN)
        y, multy = _source(gy, H, PADDING, ALIGN)
        wx0, wx1, wy0, wy1, okx0, okx1, oky0, oky1, off = _taps(x, y, H, W)
        m00 = pmask & oky0 & okx0
        m01 = pmask & oky0 & okx1
        m10 = pmask & oky1 & okx0
        m11 = pmask & oky1 & okx1
        c_end = tl.minimum(grp * c_per + c_per, C)
        for c in range(grp * c_per, c_end):
            plane = (n * C + c).to(tl.int64)
            src = inp_ptr + plane * H * W + off
            v00 = tl.load(src, mask=m00, other=0.0).to(x.dtype)
            v01 = tl.load(src + 1, mask=m01, other=0.0).to(x.dtype)
            v10 = tl.load(src + W, mask=m10, other=0.0).to(x.dtype)
            v11 = tl.load(src + W + 1, mask=m11, other=0.0).to(x.dtype)
            val = v00 * (wy0 * wx0) + v01 * (wy0 * wx1) + v10 * (wy1 * wx0) + v11 * (wy1 * wx1)
            tl.store(out_ptr + plane * P + offs, val.to(out_ptr.dtype.element_ty), mask=pmask)

    @triton.jit(do_not_specialize=["C", "H", "W", "Ho", "Wo", "c_per", "groups", "nblocks"])
    def _bwd_kernel(gout_ptr, inp_ptr, ginp_ptr, tapv_ptr, tapi_ptr, gcoord_ptr, coord_ptr, xs_ptr, ys_ptr, eps_ptr,
                    C, H, W, Ho, Wo, c_per, groups, nblocks,
                    FROM_GRID: tl.constexpr, PROJECTIVE: tl.constexpr, PADDING: tl.constexpr,
                    ALIGN: tl.constexpr, INPUT_MODE: tl.constexpr, NEED_COORD: tl.constexpr, BLOCK: tl.constexpr):
        pid_p = tl.program_id(0)
        pid_ng = tl.program_id(1)
        n = pid_ng // groups
        grp = pid_ng % groups
        P = Ho * Wo
        offs = pid_p * BLOCK + tl.arange(0, BLOCK)
        pmask = offs < P
        gx, gy, xo, yo, wd, live = _load_coords(coord_ptr, xs_ptr, ys_ptr, eps_ptr, n, offs, pmask, P, Wo,
                                                FROM_GRID, PROJECTIVE)
        x, multx = _source(gx, W, PADDING, ALIGN)
        y, multy = _source(gy, H, PADDING, ALIGN)
        wx0, wx1, wy0, wy1, okx0, okx1, oky0, oky1, off = _taps(x, y, H, W)
        m00 = pmask & oky0 & okx0
        m01 = pmask & oky0 & okx1
        m10 = pmask & oky1 & okx0
        m11 = pmask & oky1 & okx1
        if INPUT_MODE == 2:
            if grp == 0:
                ibase = tapi_ptr + n.to(tl.int64) * 4 * P + offs
                tl.store(ibase, tl.where(m00, off, 0).to(tl.int64), mask=pmask)
                tl.store(ibase + P, tl.where(m01, off + 1, 0).to(tl.int64), mask=pmask)
                tl.store(ibase + 2 * P, tl.where(m10, off + W, 0).to(tl.int64), mask=pmask)
                tl.store(ibase + 3 * P, tl.where(m11, off + W + 1, 0).to(tl.int64), mask=pmask)
        acc_x = tl.zeros_like(x)
        acc_y = tl.zeros_like(x)
        c_end = tl.minimum(grp * c_per + c_per, C)
        for c in range(grp * c_per, c_end):
            plane = (n * C + c).to(tl.int64)
            go = tl.load(gout_ptr + plane * P + offs, mask=pmask, other=0.0).to(x.dtype)
            if INPUT_MODE == 1:
                dst = ginp_ptr + plane * H * W + off
                tl.atomic_add(dst, go * (wy0 * wx0), mask=m00)
                tl.atomic_add(dst + 1, go * (wy0 * wx1), mask=m01)
                tl.atomic_add(dst + W, go * (wy1 * wx0), mask=m10)
                tl.atomic_add(dst + W + 1, go * (wy1 * wx1), mask=m11)
            if INPUT_MODE == 2:
                vbase = tapv_ptr + plane * 4 * P + offs
                tl.store(vbase, tl.where(m00, go * (wy0 * wx0), 0.0), mask=pmask)
                tl.store(vbase + P, tl.where(m01, go * (wy0 * wx1), 0.0), mask=pmask)
                tl.store(vbase + 2 * P, tl.where(m10, go * (wy1 * wx0), 0.0), mask=pmask)
                tl.store(vbase + 3 * P, tl.where(m11, go * (wy1 * wx1), 0.0), mask=pmask)
            if NEED_COORD:
                src = inp_ptr + plane * H * W + off
                v00 = tl.load(src, mask=m00, other=0.0).to(x.dtype)
                v01 = tl.load(src + 1, mask=m01, other=0.0).to(x.dtype)
                v10 = tl.load(src + W, mask=m10, other=0.0).to(x.dtype)
                v11 = tl.load(src + W + 1, mask=m11, other=0.0).to(x.dtype)
                acc_x += ((v01 - v00) * wy0 + (v11 - v10) * wy1) * go
                acc_y += ((v10 - v00) * wx0 + (v11 - v01) * wx1) * go
        if NEED_COORD:
            dgx = tl.where(pmask, acc_x * multx, 0.0)
            dgy = tl.where(pmask, acc_y * multy, 0.0)
            if FROM_GRID:
                gbase = gcoord_ptr + ((n * groups + grp).to(tl.int64) * P + offs) * 2
                tl.store(gbase, dgx, mask=pmask)
                tl.store(gbase + 1, dgy, mask=pmask)
            else:
                du = dgx / wd
                dv = dgy / wd
                part = gcoord_ptr + ((n * groups + grp).to(tl.int64) * nblocks + pid_p) * 9
                tl.store(part + 0, tl.sum(du * xo, axis=0))
                tl.store(part + 1, tl.sum(du * yo, axis=0))
                tl.store(part + 2, tl.sum(du, axis=0))
                tl.store(part + 3, tl.sum(dv * xo, axis=0))
                tl.store(part + 4, tl.sum(dv * yo, axis=0))
                tl.store(part + 5, tl.sum(dv, axis=0))
                if PROJECTIVE:
                    dw = tl.where(live & pmask, -(du * gx + dv * gy), 0.0)
                    tl.store(part + 6, tl.sum(dw * xo, axis=0))
                    tl.store(part + 7, tl.sum(dw * yo, axis=0))
                    tl.store(part + 8, tl.sum(dw, axis=0))
                else:
                    zero = tl.sum(tl.zeros_like(du), axis=0)
                    tl.store(part + 6, zero)
                    tl.store(part + 7, zero)
                    tl.store(part + 8, zero)


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _base(n: int, align_corners: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    if n == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    idx = torch.arange(n, device=device, dtype=torch.float64)
    coords = idx * (2.0 / (n - 1)) - 1.0 if align_corners else (2.0 * idx + 1.0) / n - 1.0
    return coords.to(dtype)


def _check(input: Tensor, padding: int, out_h: int, out_w: int) -> None:
    if not available():
        raise RuntimeError("the Triton kernels need triton and a CUDA device (or TRITON_INTERPRET=1 on CPU)")
    if input.ndim != 4:
        raise ValueError(f"input must have shape (N, C, H, W); got {tuple(input.shape)}")
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(f"input must have non-empty spatial dimensions (H, W); got {tuple(input.shape)}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be 0 (zeros), 1 (border) or 2 (reflection); got {padding!r}")
    if out_h < 0 or out_w < 0:
        raise ValueError(f"output size must be non-negative; got ({out_h}, {out_w})")


def _layout(n: int, c: int, p: int) -> tuple[int, int, int]:
    """Return (pixel blocks, channel groups, channels per group) for N images of C channels and P output pixels."""
    nblocks = triton.cdiv(p, BLOCK)
    groups = max(1, min(c, _TARGET_PROGRAMS // max(1, nblocks * n)))
    c_per = triton.cdiv(c, groups)
    return nblocks, triton.cdiv(c, c_per), c_per


def _launch_forward(input: Tensor, coords: Tensor, out_h: int, out_w: int, padding: int, align_corners: bool,
                    from_grid: bool, projective: bool, eps: float) -> Tensor:
    n, c, h, w = input.shape
    dt = coords.dtype
    out = torch.empty(n, c, out_h, out_w, device=input.device, dtype=input.dtype)
    p = out_h * out_w
    if out.numel() == 0:
        return out
    xs = _base(out_w, align_corners, input.device, dt)
    ys = _base(out_h, align_corners, input.device, dt)
    eps_t = torch.tensor([eps], device=input.device, dtype=dt)
    nblocks, groups, c_per = _layout(n, c, p)
    _fwd_kernel[(nblocks, n * groups)](
        input.contiguous(), out, coords.contiguous(), xs, ys, eps_t, c, h, w, out_h, out_w, c_per, groups,
        FROM_GRID=from_grid, PROJECTIVE=projective, PADDING=padding, ALIGN=align_corners, BLOCK=BLOCK)
    return out


def _launch_backward(grad_out: Tensor, input: Tensor, coords: Tensor, out_h: int, out_w: int, padding: int,
                     align_corners: bool, from_grid: bool, projective: bool, eps: float, need_input: bool,
                     need_coords: bool) -> tuple[Tensor | None, Tensor | None]:
    n, c, h, w = input.shape
    dt = coords.dtype
    dev = input.device
    p = out_h * out_w
    nblocks, groups, c_per = _layout(n, c, p)
    coord_shape = (n, groups, p, 2) if from_grid else (n, groups * max(nblocks, 1), 9)
    gcoord = torch.zeros(coord_shape, device=dev, dtype=dt) if need_coords else None
    deterministic = torch.are_deterministic_algorithms_enabled()
    ginp = torch.zeros(n, c, h, w, device=dev, dtype=dt) if need_input else None
    if grad_out.numel() == 0 or input.numel() == 0 or not (need_input or need_coords):
        return ginp, gcoord
    mode = 0 if not need_input else (2 if deterministic else 1)
    tapv = torch.empty(n, c, 4, p, device=dev, dtype=dt) if mode == 2 else None
    tapi = torch.empty(n, 4, p, device=dev, dtype=torch.int64) if mode == 2 else None
    dummy = coords
    xs = _base(out_w, align_corners, dev, dt)
    ys = _base(out_h, align_corners, dev, dt)
    eps_t = torch.tensor([eps], device=dev, dtype=dt)
    _bwd_kernel[(nblocks, n * groups)](
        grad_out.contiguous(), input.contiguous(), dummy if ginp is None else ginp,
        dummy if tapv is None else tapv, dummy if tapi is None else tapi, dummy if gcoord is None else gcoord,
        coords.contiguous(), xs, ys, eps_t, c, h, w, out_h, out_w, c_per, groups, nblocks,
        FROM_GRID=from_grid, PROJECTIVE=projective, PADDING=padding, ALIGN=align_corners, INPUT_MODE=mode,
        NEED_COORD=need_coords, BLOCK=BLOCK)
    if mode == 2:
        planes = torch.arange(n * c, device=dev).view(n, c, 1, 1) * (h * w)
        index = (tapi.view(n, 1, 4, p) + planes).reshape(-1)
        ginp.view(-1).index_put_((index,), tapv.reshape(-1), accumulate=True)
    return ginp, gcoord


def warp_matrix_forward(input: Tensor, matrix: Tensor, out_h: int, out_w: int, padding: int, align_corners: bool,
                        projective: bool, eps: float) -> Tensor:
    """Warp ``input`` by output -> source matrices with bilinear sampling, as ``F.grid_sample`` of their grid.

    Args:
        input: images (N, C, H, W), floating point, on CUDA (or CPU under the interpreter).
        matrix: output -> source matrices (N, 3, 3), normalised frame, same device.
        out_h: output height H_out.
        out_w: output width W_out.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.
        projective: divide by the third row's ``w`` (else the last row is ignored).
        eps: smallest ``|w|`` of the perspective division (sign kept).

    Returns:
        Output (N, C, H_out, W_out) in the dtype of ``input``.

    Raises:
        RuntimeError: triton or a device for it missing.
        ValueError: an input that is not (N, C, H, W) with H, W > 0, an unknown padding code.
    """
    _check(input, padding, out_h, out_w)
    m = matrix.reshape(matrix.shape[0], 9).to(_compute_dtype(input.dtype, matrix.dtype))
    return _launch_forward(input, m, out_h, out_w, padding, align_corners, False, projective, eps)


def warp_matrix_backward(grad_out: Tensor, input: Tensor, matrix: Tensor, out_h: int, out_w: int, padding: int,
                         align_corners: bool, projective: bool, eps: float, need_input: bool,
                         need_matrix: bool) -> tuple[Tensor | None, Tensor | None]:
    """Return the gradients of :func:`warp_matrix_forward` w.r.t. ``input`` and ``matrix`` (None where not needed).

    The matrix gradient is summed from per-block partials (N, blocks, 9) without atomics. The input gradient
    buffer exists only when ``need_input``; it uses atomics, or a deterministic ``index_put_`` of per-tap
    contributions under ``torch.are_deterministic_algorithms_enabled()``.

    Args:
        grad_out: gradient of the output (N, C, H_out, W_out).
        input: images (N, C, H, W) of the forward.
        matrix: matrices (N, 3, 3) of the forward.
        out_h: output height H_out.
        out_w: output width W_out.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.
        projective: as in the forward.
        eps: as in the forward.
        need_input: compute the input gradient.
        need_matrix: compute the matrix gradient.

    Returns:
        ``(grad_input (N, C, H, W) or None, grad_matrix (N, 3, 3) or None)`` in the dtypes of input and matrix.
    """
    _check(input, padding, out_h, out_w)
    n = input.shape[0]
    m = matrix.reshape(n, 9).to(_compute_dtype(input.dtype, matrix.dtype))
    ginp, parts = _launch_backward(grad_out, input, m, out_h, out_w, padding, align_corners, False, projective, eps,
                                   need_input, need_matrix)
    gm = None if parts is None else parts.sum(1).view(n, 3, 3).to(matrix.dtype)
    return (None if ginp is None else ginp.to(input.dtype)), gm


def _check_grid(input: Tensor, grid: Tensor) -> None:
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid must have shape (N, H_out, W_out, 2) with N = {input.shape[0]}; "
                         f"got {tuple(grid.shape)}")


def sample_forward(input: Tensor, grid: Tensor, padding: int, align_corners: bool) -> Tensor:
    """Sample ``input`` bilinearly at ``grid``, as ``F.grid_sample``.

    Args:
        input: images (N, C, H, W), floating point.
        grid: source coordinates (N, H_out, W_out, 2) as (x, y), normalised, same device.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.

    Returns:
        Output (N, C, H_out, W_out) in the dtype of ``input``.

    Raises:
        RuntimeError: triton or a device for it missing.
        ValueError: wrong shapes or padding code.
    """
    _check(input, padding, grid.shape[1] if grid.ndim == 4 else 0, grid.shape[2] if grid.ndim == 4 else 0)
    _check_grid(input, grid)
    g = grid.to(_compute_dtype(input.dtype, grid.dtype))
    return _launch_forward(input, g, grid.shape[1], grid.shape[2], padding, align_corners, True, False, 0.0)


def sample_backward(grad_out: Tensor, input: Tensor, grid: Tensor, padding: int, align_corners: bool,
                    need_input: bool, need_grid: bool) -> tuple[Tensor | None, Tensor | None]:
    """Return the gradients of :func:`sample_forward` w.r.t. ``input`` and ``grid`` (None where not needed).

    Args:
        grad_out: gradient of the output (N, C, H_out, W_out).
        input: images (N, C, H, W) of the forward.
        grid: source coordinates (N, H_out, W_out, 2) of the forward.
        padding: 0 zeros, 1 border, 2 reflection.
        align_corners: frame convention of ``F.grid_sample``.
        need_input: compute the input gradient.
        need_grid: compute the grid gradient (written per pixel, no atomics).

    Returns:
        ``(grad_input (N, C, H, W) or None, grad_grid (N, H_out, W_out, 2) or None)``.
    """
    _check(input, padding, grid.shape[1] if grid.ndim == 4 else 0, grid.shape[2] if grid.ndim == 4 else 0)
    _check_grid(input, grid)
    g = grid.to(_compute_dtype(input.dtype, grid.dtype))
    ho, wo = grid.shape[1], grid.shape[2]
    ginp, parts = _launch_backward(grad_out, input, g, ho, wo, padding, align_corners, True, False, 0.0,
                                   need_input, need_grid)
    gg = None if parts is None else parts.sum(1).view(grid.shape).to(grid.dtype)
    return (None if ginp is None else ginp.to(input.dtype)), gg
