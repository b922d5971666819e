"""The Triton warp kernels against affine_grid-like grids + F.grid_sample (interpreter on CPU, real kernels on CUDA)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stnkit.grid import base_coords

pytest.importorskip("triton")

from stnkit.kernels import triton_warp as tw  # noqa: E402

PADDINGS = ("zeros", "border", "reflection")
EPS = 1e-6
KDEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (real Triton kernels)")


def reference_grid(matrix, out_h, out_w, align_corners, projective):
    x = base_coords(out_w, align_corners, device=matrix.device, dtype=matrix.dtype).view(1, 1, out_w)
    y = base_coords(out_h, align_corners, device=matrix.device, dtype=matrix.dtype).view(1, out_h, 1)
    m = matrix[:, :, :, None, None]
    u = m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2]
    v = m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2]
    if projective:
        w = m[:, 2, 0] * x + m[:, 2, 1] * y + m[:, 2, 2]
        w_abs = w.abs().clamp_min(EPS)
        w = torch.where(w < 0, -w_abs, w_abs)
        u, v = u / w, v / w
    return torch.stack([u, v], dim=-1)  # (N, Ho, Wo, 2)


def reference_warp(input, matrix, out_h, out_w, padding, align_corners, projective):
    grid = reference_grid(matrix, out_h, out_w, align_corners, projective)
    return F.grid_sample(input, grid, padding_mode=padding, align_corners=align_corners)


def random_matrix(n, dtype, projective, device=KDEV):
    m = torch.eye(3, dtype=dtype).repeat(n, 1, 1) + 0.3 * torch.randn(n, 3, 3, dtype=dtype)
    if projective:
        m[:, 2, :2] *= 0.5
    else:
        m[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=dtype)
    return m.to(device)


def tolerance(dtype):
    return {"atol": 1e-10, "rtol": 1e-9} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-4}


def check_matrix_case(n, c, size, out, padding, align_corners, projective, dtype, device=KDEV):
    x = torch.randn(n, c, *size, dtype=dtype, device=device)
    m = random_matrix(n, dtype, projective, device)
    pad = PADDINGS.index(padding)
    xr, mr = x.clone().requires_grad_(), m.clone().requires_grad_()
    ref = reference_warp(xr, mr, *out, padding, align_corners, projective)
    g = torch.randn_like(ref)
    ref_gx, ref_gm = torch.autograd.grad(ref, (xr, mr), g)
    got = tw.warp_matrix_forward(x, m, *out, pad, align_corners, projective, EPS)
    got_gx, got_gm = tw.warp_matrix_backward(g, x, m, *out, pad, align_corners, projective, EPS, True, True)
    torch.testing.assert_close(got, ref.detach(), **tolerance(dtype))
    torch.testing.assert_close(got_gx, ref_gx, **tolerance(dtype))
    if not projective:
        ref_gm = ref_gm.clone()
        ref_gm[:, 2] = 0
    torch.testing.assert_close(got_gm, ref_gm, **tolerance(dtype))


@pytest.mark.parametrize("projective", [False, True], ids=["affine", "projective"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matrix_warp_matches_reference(dtype, padding, align_corners, projective):
    check_matrix_case(2, 2, (5, 7), (3, 4), padding, align_corners, projective, dtype)


@pytest.mark.parametrize("padding", PADDINGS)
def test_matrix_warp_batch1_upsampling_and_single_pixel_output(padding):
    check_matrix_case(1, 1, (4, 5), (7, 3), padding, True, False, torch.float64)
    check_matrix_case(1, 3, (3, 2), (1, 1), padding, False, True, torch.float64)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sample_matches_grid_sample(dtype, padding, align_corners):
    x = torch.randn(2, 3, 5, 7, dtype=dtype, device=KDEV)
    grid = torch.rand(2, 3, 4, 2, dtype=dtype, device=KDEV) * 2.8 - 1.4
    pad = PADDINGS.index(padding)
    xr, gr = x.clone().requires_grad_(), grid.clone().requires_grad_()
    ref = F.grid_sample(xr, gr, padding_mode=padding, align_corners=align_corners)
    g = torch.randn_like(ref)
    ref_gx, ref_gg = torch.autograd.grad(ref, (xr, gr), g)
    got = tw.sample_forward(x, grid, pad, align_corners)
    got_gx, got_gg = tw.sample_backward(g, x, grid, pad, align_corners, True, True)
    torch.testing.assert_close(got, ref.detach(), **tolerance(dtype))
    torch.testing.assert_close(got_gx, ref_gx, **tolerance(dtype))
    torch.testing.assert_close(got_gg, ref_gg, **tolerance(dtype))


def test_border_gradient_is_zero_exactly_at_the_last_pixel_centre():
    # torch's groundtruth: input arange(5) as 1x1x5x5, one sample at the bottom-right centre, align_corners=True
    x = torch.arange(5.0, device=KDEV).expand(1, 1, 5, 5).contiguous()
    grid = torch.ones(1, 1, 1, 2, device=KDEV)
    _, g_grid = tw.sample_backward(torch.ones(1, 1, 1, 1, device=KDEV), x, grid, 1, True, False, True)
    assert g_grid.abs().max().item() == 0.0
    m = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]], device=KDEV)
    out = tw.warp_matrix_forward(x, m, 1, 1, 1, True, False, EPS)
    _, g_m = tw.warp_matrix_backward(torch.ones_like(out), x, m, 1, 1, 1, True, False, EPS, False, True)
    assert out.item() == 4.0
    assert g_m.abs().max().item() == 0.0


@pytest.mark.parametrize("padding", PADDINGS)
def test_nan_matrix_gives_nan_output_and_gradient(padding):
    x = torch.rand(2, 1, 4, 4, device=KDEV)
    m = random_matrix(2, torch.float32, False)
    m[1, 0, 0] = float("nan")
    out = tw.warp_matrix_forward(x, m, 3, 3, PADDINGS.index(padding), False, False, EPS)
    _, g_m = tw.warp_matrix_backward(
        torch.ones_like(out), x, m, 3, 3, PADDINGS.index(padding), False, False, EPS, False, True
    )
    assert out[1].isnan().all()
    assert not out[0].isnan().any()
    assert g_m[1, :2].isnan().any()
    assert not g_m[0].isnan().any()
    if padding == "zeros":
        assert reference_warp(x, m, 3, 3, padding, False, False)[1].isnan().all()


@pytest.mark.parametrize("padding", PADDINGS)
def test_nan_input_pixel_propagates_as_grid_sample(padding):
    x = torch.rand(1, 2, 5, 5, device=KDEV)
    x[0, 1, 2, 3] = float("nan")
    m = random_matrix(1, torch.float32, False)
    ref = reference_warp(x, m, 4, 4, padding, False, False)
    got = tw.warp_matrix_forward(x, m, 4, 4, PADDINGS.index(padding), False, False, EPS)
    assert ref.isnan().any()
    assert torch.equal(got.isnan(), ref.isnan())
    torch.testing.assert_close(got.nan_to_num(7.0), ref.nan_to_num(7.0))


@pytest.mark.parametrize("kind", ["matrix", "grid"])
def test_deterministic_mode_is_bit_identical_and_equals_atomics(kind):
    x = torch.randn(2, 3, 6, 5, device=KDEV)
    m = random_matrix(2, torch.float32, True) * 0.4  # zoom in: many outputs share the same input taps
    m[:, 2, 2] = 1.0
    grid = tw_grid = reference_grid(m, 7, 9, False, True)
    g = torch.randn(2, 3, 7, 9, device=KDEV)

    def run():
        if kind == "matrix":
            return tw.warp_matrix_backward(g, x, m, 7, 9, 0, False, True, EPS, True, True)
        return tw.sample_backward(g, x, tw_grid, 0, False, True, True)

    atomic = run()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = run(), run()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    torch.testing.assert_close(first[0], atomic[0])
    torch.testing.assert_close(first[1], atomic[1])
    ref_gx = torch.autograd.grad(F.grid_sample(x.requires_grad_(), grid, align_corners=False), x, g)[0]
    torch.testing.assert_close(first[0], ref_gx)


def test_unneeded_gradients_are_none():
    x = torch.rand(1, 1, 4, 4, device=KDEV)
    m = random_matrix(1, torch.float32, False)
    g = torch.ones(1, 1, 2, 2, device=KDEV)
    gi, gm = tw.warp_matrix_backward(g, x, m, 2, 2, 0, False, False, EPS, False, True)
    assert gi is None
    assert gm.shape == (1, 3, 3)
    gi, gm = tw.warp_matrix_backward(g, x, m, 2, 2, 0, False, False, EPS, True, False)
    assert gm is None
    assert gi.shape == (1, 1, 4, 4)


def test_half_input_computed_in_float32():
    x = torch.rand(1, 2, 5, 6, device=KDEV)
    m = random_matrix(1, torch.float32, False)
    got = tw.warp_matrix_forward(x.half(), m, 3, 4, 2, False, False, EPS)
    assert got.dtype == torch.float16
    torch.testing.assert_close(
        got.float(), reference_warp(x, m, 3, 4, "reflection", False, False), atol=2e-3, rtol=2e-3
    )


def test_bad_arguments_raise_one_clear_error():
    x = torch.rand(1, 1, 4, 4, device=KDEV)
    with pytest.raises(ValueError, match=r"matrix must be \(N, 3, 3\)"):
        tw.warp_matrix_forward(x, torch.eye(3, device=KDEV)[None, :2], 2, 2, 0, False, False, EPS)
    with pytest.raises(ValueError, match="padding must be 0"):
        tw.warp_matrix_forward(x, torch.eye(3, device=KDEV)[None], 2, 2, 3, False, False, EPS)
    with pytest.raises(ValueError, match="non-empty spatial dimensions"):
        tw.warp_matrix_forward(x[:, :, :0], torch.eye(3, device=KDEV)[None], 2, 2, 0, False, False, EPS)
    with pytest.raises(ValueError, match=r"grid must be \(N, H_out, W_out, 2\)"):
        tw.sample_forward(x, torch.zeros(1, 2, 2, 3, device=KDEV), 0, False)


def test_empty_output_and_batch():
    x = torch.rand(0, 1, 4, 4, device=KDEV)
    assert tw.warp_matrix_forward(x, torch.zeros(0, 3, 3, device=KDEV), 2, 2, 0, False, False, EPS).shape == (
        0,
        1,
        2,
        2,
    )
    gi, gm = tw.warp_matrix_backward(
        torch.zeros(0, 1, 2, 2, device=KDEV),
        x,
        torch.zeros(0, 3, 3, device=KDEV),
        2,
        2,
        0,
        False,
        False,
        EPS,
        True,
        True,
    )
    assert gi.shape == (0, 1, 4, 4)
    assert gm.shape == (0, 3, 3)


def test_available_is_true_where_these_tests_run():
    assert tw.available()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("projective", [False, True], ids=["affine", "projective"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_cuda_matrix_warp_matches_reference_at_real_sizes(padding, projective):
    check_matrix_case(16, 3, (42, 42), (21, 21), padding, False, projective, torch.float32, device="cuda")
    check_matrix_case(2, 64, (56, 56), (56, 56), padding, True, projective, torch.float64, device="cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("padding", PADDINGS)
def test_cuda_sample_matches_grid_sample(padding):
    x = torch.randn(8, 4, 60, 60, device="cuda")
    grid = torch.rand(8, 30, 30, 2, device="cuda") * 2.4 - 1.2
    xr, gr = x.clone().requires_grad_(), grid.clone().requires_grad_()
    ref = F.grid_sample(xr, gr, padding_mode=padding, align_corners=False)
    g = torch.randn_like(ref)
    ref_gx, ref_gg = torch.autograd.grad(ref, (xr, gr), g)
    pad = PADDINGS.index(padding)
    torch.testing.assert_close(tw.sample_forward(x, grid, pad, False), ref.detach(), atol=2e-5, rtol=1e-4)
    got_gx, got_gg = tw.sample_backward(g, x, grid, pad, False, True, True)
    torch.testing.assert_close(got_gx, ref_gx, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_gg, ref_gg, atol=1e-3, rtol=1e-3)
