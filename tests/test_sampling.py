import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import stnkit
from stnkit import sample, warp
from stnkit.grid import identity_grid
from tests._reference import bilinear_loop, nearest_loop, to_pixel


def random_grid(n, h, w, dtype=torch.float64):
    return torch.rand(n, h, w, 2, dtype=dtype) * 2.4 - 1.2  # some points fall outside (padding)


class TestSample:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_bilinear_matches_eq5(self, align_corners):
        img = torch.rand(1, 2, 5, 6, dtype=torch.float64)
        grid = random_grid(1, 4, 3)
        expected = bilinear_loop(img[0].numpy(), grid[0].numpy(), align_corners)
        got = sample(img, grid, align_corners=align_corners)[0]
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_nearest_matches_eq4(self, align_corners):
        img = torch.rand(1, 1, 5, 6, dtype=torch.float64)
        grid = random_grid(1, 4, 4)
        expected = nearest_loop(img[0].numpy(), grid[0].numpy(), align_corners)
        np.testing.assert_allclose(sample(img, grid, "nearest", align_corners=align_corners)[0].numpy(), expected)

    @pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
    def test_matches_grid_sample(self, mode, padding_mode):
        img, grid = torch.rand(2, 3, 7, 8), random_grid(2, 5, 4, torch.float32)
        expected = F.grid_sample(img, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
        torch.testing.assert_close(sample(img, grid, mode, padding_mode), expected)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, align_corners):
        img = torch.rand(2, 3, 9, 7)
        grid = identity_grid((9, 7), align_corners).expand(2, -1, -1, -1)
        torch.testing.assert_close(sample(img, grid, align_corners=align_corners), img)

    def test_gradcheck_input_and_grid(self):
        # eq. 6-7: sub-gradients to both U and (x_s, y_s); keep points off integer pixel positions
        img = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
        grid = (random_grid(1, 3, 3) * 0.8).requires_grad_()
        assert gradcheck(lambda u, g: sample(u, g), (img, grid))

    def test_5d(self):
        vol = torch.rand(2, 1, 3, 4, 5, dtype=torch.float64)
        grid = identity_grid((3, 4, 5), dtype=torch.float64).expand(2, -1, -1, -1, -1)
        torch.testing.assert_close(sample(vol, grid), vol)

    def test_half_input_sampled_in_float32(self):
        img = torch.rand(1, 1, 8, 8)
        grid = random_grid(1, 4, 4, torch.float32)
        out = sample(img.half(), grid)
        assert out.dtype == torch.float16
        torch.testing.assert_close(out.float(), sample(img.half().float(), grid), atol=1e-3, rtol=1e-3)

    @pytest.mark.parametrize(
        ("inp", "grid", "kw", "exc", "match"),
        [
            (torch.rand(3, 4, 4), torch.rand(1, 2, 2, 2), {}, ValueError, r"input must have shape .*got \(3, 4, 4\)"),
            (torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2, 3), {}, ValueError, r"grid for a 4-D input"),
            (torch.rand(2, 1, 4, 4), torch.rand(3, 2, 2, 2), {}, ValueError, "batch size mismatch"),
            (torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2, 2), {"mode": "linear"}, ValueError, "unknown mode"),
            (torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2, 2), {"padding_mode": "wrap"}, ValueError,
             "unknown padding_mode"),
            (torch.ones(1, 1, 4, 4, dtype=torch.uint8), torch.rand(1, 2, 2, 2), {}, TypeError, "input must have a "
             "floating-point dtype"),
            (torch.rand(1, 1, 4, 4), torch.ones(1, 2, 2, 2, dtype=torch.long), {}, TypeError, "grid must have"),
            (np.zeros((1, 1, 4, 4)), torch.rand(1, 2, 2, 2), {}, TypeError, "torch.Tensor"),
            (torch.rand(1, 1, 2, 2, 2), torch.rand(1, 2, 2, 2, 3), {"mode": "bicubic"}, ValueError, "bicubic"),
        ],
    )
    def test_errors(self, inp, grid, kw, exc, match):
        with pytest.raises(exc, match=match):
            sample(inp, grid, **kw)

    def test_device_mismatch(self):
        with pytest.raises(ValueError, match="same device"):
            sample(torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2, 2, device="meta"))


class TestWarp:
    @pytest.mark.parametrize("name", ["affine", "attention", "translation", "similarity", "projective", "tps"])
    @pytest.mark.parametrize("size", [None, (14, 14), (56, 40), 7])
    def test_shapes(self, name, size):
        t = stnkit.transforms.get(name)
        x = torch.rand(3, 2, 28, 28)
        out = warp(x, t.identity().expand(3, -1), t, size)
        expected = (28, 28) if size is None else ((size, size) if isinstance(size, int) else size)
        assert out.shape == (3, 2, *expected)

    @pytest.mark.parametrize("name", ["affine", "attention", "translation", "similarity", "projective", "tps"])
    def test_identity(self, name):
        t = stnkit.transforms.get(name)
        x = torch.rand(2, 3, 11, 13)
        torch.testing.assert_close(warp(x, t.identity().expand(2, -1), name), x, atol=2e-6, rtol=0)

    def test_attention_downsampled_crop(self):
        # attention (s=0.5, centred) at half resolution = average of each 2x2 block of the central 14x14 region
        x = torch.rand(1, 1, 28, 28, dtype=torch.float64)
        out = warp(x, torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64), "attention", (7, 7))
        crop = x[:, :, 7:21, 7:21]
        expected = F.avg_pool2d(crop, 2)
        torch.testing.assert_close(out, expected)

    @pytest.mark.parametrize(
        ("kw", "exc", "match"),
        [
            ({"params": torch.zeros(2, 5)}, ValueError, r"params for transform='affine' must have shape \(N, 6\)"),
            ({"params": torch.zeros(3, 6)}, ValueError, "batch size mismatch"),
            ({"transform": "rotation"}, ValueError, "unknown transform 'rotation'; known transforms: affine"),
            ({"output_size": (0, 4)}, ValueError, "output_size entries must be positive"),
            ({"output_size": (4, 4, 4)}, ValueError, r"output_size must have 2 entries"),
            ({"output_size": (4.5, 4)}, TypeError, "integers"),
            ({"params": torch.zeros(2, 6, dtype=torch.int32)}, TypeError, "params must have a floating-point"),
        ],
    )
    def test_errors(self, kw, exc, match):
        args = {"input": torch.rand(2, 1, 8, 8), "params": torch.zeros(2, 6), "transform": "affine"} | kw
        with pytest.raises(exc, match=match):
            warp(**args)


def bilinear_fill_loop(img: np.ndarray, grid: np.ndarray, fill: np.ndarray, align_corners: bool) -> np.ndarray:
    """Eq. 5 with constant padding, tap by tap: each of the 4 neighbours reads img inside, fill[c] outside."""
    c, h_in, w_in = img.shape
    h, w, _ = grid.shape
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            xs = to_pixel(grid[i, j, 0], w_in, align_corners)
            ys = to_pixel(grid[i, j, 1], h_in, align_corners)
            x0, y0 = int(np.floor(xs)), int(np.floor(ys))
            for n in (y0, y0 + 1):
                for m in (x0, x0 + 1):
                    k = (1 - abs(xs - m)) * (1 - abs(ys - n))
                    inside = 0 <= n < h_in and 0 <= m < w_in
                    out[:, i, j] += k * (img[:, n, m] if inside else fill)
    return out


def ones_mask_fill(x, params, transform, size, fill, **kw):
    """The construction libraries use for constant padding: warp(x) + f * (1 - warp(ones))."""
    f = fill.view(1, -1, *([1] * (x.ndim - 2))) if isinstance(fill, torch.Tensor) else fill
    return warp(x, params, transform, size, **kw) + f * (1 - warp(torch.ones_like(x), params, transform, size, **kw))


def random_params(t, n, scale=0.3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return t.identity().to(dtype).expand(n, -1) + scale * torch.randn(n, t.num_params, generator=g, dtype=dtype)


class TestFill:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_tap_loop(self, align_corners):
        img = torch.rand(1, 2, 5, 6, dtype=torch.float64)
        grid = random_grid(1, 4, 5)
        fill = torch.tensor([0.7, -1.5], dtype=torch.float64)
        expected = bilinear_fill_loop(img[0].numpy(), grid[0].numpy(), fill.numpy(), align_corners)
        got = sample(img, grid, padding_mode="fill", fill_value=fill, align_corners=align_corners)[0]
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)

    @pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
    @pytest.mark.parametrize("name", ["affine", "attention", "translation", "similarity", "projective", "tps"])
    def test_matches_ones_mask(self, name, mode):
        t = stnkit.transforms.get(name)
        x = torch.rand(2, 3, 9, 8, dtype=torch.float64)
        p = random_params(t, 2) * 1.4 if name in ("affine", "attention") else random_params(t, 2)  # zoom out a bit
        fill = torch.tensor([0.25, -2.0, 3.0], dtype=torch.float64)
        for f in (fill, 0.5):
            got = warp(x, p, t, (7, 6), mode=mode, padding_mode="fill", fill_value=f)
            torch.testing.assert_close(got, ones_mask_fill(x, p, t, (7, 6), f, mode=mode))
        assert not torch.allclose(got, warp(x, p, t, (7, 6), mode=mode))  # some samples do fall outside

    def test_default_zero_and_outside_reads_fill(self):
        x = torch.rand(2, 3, 8, 8)
        far = torch.tensor([[1.0, 0.0, 5.0, 0.0, 1.0, 5.0]])  # every sample far outside the input
        out = warp(x, far, padding_mode="fill", fill_value=torch.tensor([0.1, 0.2, 0.3]))
        torch.testing.assert_close(out, torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1).expand(2, 3, 8, 8))
        torch.testing.assert_close(warp(x, far, padding_mode="fill"), torch.zeros(2, 3, 8, 8))

    def test_volume(self):
        t = stnkit.transforms.get("affine3d")
        x = torch.rand(2, 2, 4, 5, 6, dtype=torch.float64)
        p = random_params(t, 2)
        got = warp(x, p, t, (3, 4, 5), padding_mode="fill", fill_value=torch.tensor([1.0, -1.0], dtype=x.dtype))
        torch.testing.assert_close(got, ones_mask_fill(x, p, t, (3, 4, 5), torch.tensor([1.0, -1.0]).double()))

    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_gradcheck_input_params_fill(self, name):
        t = stnkit.transforms.get(name)
        x = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
        p = random_params(t, 1, 0.2).requires_grad_()
        fill = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)

        def fn(u, q, f):
            return warp(u, q, t, (3, 4), padding_mode="fill", fill_value=f)

        assert gradcheck(fn, (x, p, fill))
        if name == "tps":  # the CPU fused kernel of the matrix families is once-differentiable until issue 14 lands
            assert gradgradcheck(fn, (x, p, fill))

    def test_sample_gradcheck_fill(self):
        img = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
        grid = (random_grid(1, 3, 3) * 1.1).requires_grad_()
        fill = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
        assert gradcheck(lambda u, g, f: sample(u, g, padding_mode="fill", fill_value=f), (img, grid, fill))

    @pytest.mark.parametrize(
        ("kw", "exc", "match"),
        [
            ({"fill_value": 0.5}, ValueError, r"fill_value is only used with padding_mode='fill'; got padding_mode="),
            ({"padding_mode": "border", "fill_value": torch.zeros(3)}, ValueError, "only used with padding_mode="),
            ({"padding_mode": "fill", "fill_value": torch.zeros(2)}, ValueError,
             r"fill_value must have shape \(3,\) \(one value per channel of input \(2, 3, 8, 8\)\)"),
            ({"padding_mode": "fill", "fill_value": torch.zeros(3, 1)}, ValueError, r"shape \(C,\); got \(3, 1\)"),
            ({"padding_mode": "fill", "fill_value": "white"}, TypeError, "fill_value must be a number"),
            ({"padding_mode": "fill", "fill_value": torch.zeros(3, dtype=torch.long)}, TypeError, "fill_value must"),
            ({"padding_mode": "fill", "fill_value": torch.zeros(3, device="meta")}, ValueError, "same device"),
        ],
    )
    def test_errors(self, kw, exc, match):
        x, grid = torch.rand(2, 3, 8, 8), torch.rand(2, 4, 4, 2)
        with pytest.raises(exc, match=match):
            warp(x, torch.zeros(2, 6), **kw)
        with pytest.raises(exc, match=match):
            sample(x, grid, **kw)


def footprint_reference(x, params, t, size, factor, align_corners):
    """Average of the warp at factor x factor sub-pixel positions of each output pixel, from the definitions."""
    h, w = size
    dt = x.dtype

    def axis(n):  # (n * factor,) sub-pixel coordinates: centre of pixel i +- half a pixel, evenly spaced
        i = torch.arange(n, dtype=dt).repeat_interleave(factor)
        k = torch.arange(factor, dtype=dt).repeat(n)
        px = i + (k + 0.5) / factor - 0.5  # pixel-index coordinate of each sub-pixel
        if align_corners:
            return 2 * px / (n - 1) - 1
        return (2 * px + 1) / n - 1

    ys, xs = torch.meshgrid(axis(h), axis(w), indexing="ij")
    points = torch.stack([xs, ys], -1).reshape(-1, 2)  # (M, 2)
    grid = t.transform_points(params, points).reshape(x.shape[0], h * factor, w * factor, 2)
    fine = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return F.avg_pool2d(fine, factor)


def smooth_image(n, h, w, dtype=torch.float64):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=dtype), torch.linspace(0, 1, w, dtype=dtype), indexing="ij")
    img = torch.sin(3 * xx + 1) * torch.cos(2 * yy) + 0.5 * torch.sin(5 * xx * yy)
    return img.expand(n, 1, h, w).contiguous()


class TestAntialias:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_close_to_dense_footprint_average(self, name, align_corners):
        t = stnkit.transforms.get(name)
        x = smooth_image(2, 48, 40)
        p = 0.7 * t.identity().double() + random_params(t, 2, 0.03) - t.identity().double()  # footprints inside
        out = warp(x, p, t, (8, 8), antialias=True, align_corners=align_corners)  # factors (6, 5)
        dense = footprint_reference(x, p, t, (8, 8), 16, align_corners)
        plain = warp(x, p, t, (8, 8), align_corners=align_corners)
        err, err_plain = (out - dense).abs().max(), (plain - dense).abs().max()
        assert err < 2e-3
        assert err < 0.2 * err_plain

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_exact_at_its_own_factor(self, align_corners):
        t = stnkit.transforms.get("similarity")
        x = torch.rand(2, 2, 16, 16, dtype=torch.float64)
        p = random_params(t, 2, 0.1)
        out = warp(x, p, t, (4, 4), antialias=True, align_corners=align_corners)  # factor 4 on both axes
        torch.testing.assert_close(out, footprint_reference(x, p, t, (4, 4), 4, align_corners))

    def test_checkerboard_nyquist_goes_grey(self):
        idx = torch.arange(32)
        board = ((idx[:, None] + idx[None, :]) % 2).float().expand(1, 1, 32, 32)  # period 2 px: the Nyquist rate
        ident = torch.tensor([[1.0, 0.0, 0.0]])
        # a small rotation: the plain 4x downsampling reads single pixels and aliases
        p = torch.tensor([[0.998, -0.06, 0.013, 0.06, 0.998, 0.021]])
        smooth = warp(board, p, "affine", (8, 8), antialias=True)
        aliased = warp(board, p, "affine", (8, 8))
        assert (smooth[..., 1:-1, 1:-1] - 0.5).abs().max() < 0.08
        assert (aliased - 0.5).abs().max() > 0.3
        torch.testing.assert_close(warp(board, ident, "attention", (8, 8), antialias=True),
                                   torch.full((1, 1, 8, 8), 0.5))  # identity: exact block means

    @pytest.mark.parametrize("name", ["affine", "tps"])
    def test_same_size_is_plain_warp(self, name):
        t = stnkit.transforms.get(name)
        x = torch.rand(2, 3, 9, 7)
        p = random_params(t, 2, 0.1, torch.float32)
        for ac in (False, True):
            torch.testing.assert_close(warp(x, p, t, antialias=True, align_corners=ac),
                                       warp(x, p, t, align_corners=ac), rtol=0, atol=0)

    def test_factors(self):
        assert stnkit.sampling.antialias_factors((120, 120), (20, 30)) == (6, 4)
        assert stnkit.sampling.antialias_factors((1000, 5), (10, 10)) == (8, 1)  # capped; never below 1
        assert stnkit.sampling.antialias_factors((9, 9), (1, 3), align_corners=True) == (1, 3)

    def test_volume(self):
        t = stnkit.transforms.get("affine3d")
        x = torch.rand(1, 1, 8, 8, 8, dtype=torch.float64)
        ident = t.identity().double()[None]
        out = warp(x, ident, t, (4, 4, 4), antialias=True)
        torch.testing.assert_close(out, F.avg_pool3d(x, 2))

    def test_with_fill(self):
        t = stnkit.transforms.get("attention")
        x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
        p = torch.tensor([[1.6, 0.1, 0.0]], dtype=torch.float64)
        fill = torch.tensor([2.0, -1.0], dtype=torch.float64)
        got = warp(x, p, t, (4, 4), antialias=True, padding_mode="fill", fill_value=fill)
        expected = ones_mask_fill(x, p, t, (4, 4), fill, antialias=True)
        torch.testing.assert_close(got, expected)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("name", ["affine", "tps"])
    def test_gradcheck(self, name, align_corners):
        t = stnkit.transforms.get(name)
        x = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
        p = random_params(t, 1, 0.1).requires_grad_()
        assert gradcheck(lambda u, q: warp(u, q, t, (3, 2), antialias=True, align_corners=align_corners), (x, p))


class TestBroadcastParams:
    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_batch1_params_apply_to_all(self, name):
        t = stnkit.transforms.get(name)
        x = torch.rand(4, 2, 9, 9, dtype=torch.float64)
        p = random_params(t, 1, 0.2)
        torch.testing.assert_close(warp(x, p, t, (5, 6)), warp(x, p.expand(4, -1), t, (5, 6)))
        q = p.clone().requires_grad_()
        warp(x, q, t, (5, 6)).square().sum().backward()
        r = p.expand(4, -1).clone().requires_grad_()
        warp(x, r, t, (5, 6)).square().sum().backward()
        torch.testing.assert_close(q.grad, r.grad.sum(0, keepdim=True))  # summed over the inputs it served

    def test_sample_batch1_grid(self):
        x, grid = torch.rand(3, 2, 6, 6), random_grid(1, 4, 4, torch.float32)
        torch.testing.assert_close(sample(x, grid), F.grid_sample(x, grid.expand(3, -1, -1, -1), align_corners=False))

    def test_other_mismatch_unchanged(self):
        with pytest.raises(ValueError, match=r"batch size mismatch: input has batch 1 \(1, 1, 4, 4\) but params"):
            warp(torch.rand(1, 1, 4, 4), torch.zeros(3, 6))
        with pytest.raises(ValueError, match="batch size mismatch"):
            sample(torch.rand(1, 1, 4, 4), torch.zeros(2, 2, 2, 2))


class TestMetaAndLimits:
    @pytest.mark.parametrize("name", ["affine", "attention", "projective", "tps"])
    def test_meta_device_shapes(self, name):
        t = stnkit.transforms.get(name)
        x = torch.empty(3, 2, 16, 16, device="meta")
        p = torch.empty(3, t.num_params, device="meta")
        out = warp(x, p, t, (5, 7), padding_mode="fill", fill_value=torch.empty(2, device="meta"), antialias=True)
        assert out.shape == (3, 2, 5, 7)
        assert out.device.type == "meta"

    def test_meta_volume(self):
        out = warp(torch.empty(2, 1, 6, 6, 6, device="meta"), torch.empty(2, 12, device="meta"), "affine3d", 3)
        assert out.shape == (2, 1, 3, 3, 3)

    def test_huge_output_size_refused(self):
        with pytest.raises(ValueError, match=r"output_size \(50000, 50000\) has 2,500,000,000 points, more than"):
            warp(torch.rand(1, 1, 4, 4), torch.zeros(1, 6), output_size=(50000, 50000))
