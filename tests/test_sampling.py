import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import stnkit
from stnkit import sample, warp
from stnkit.grid import identity_grid
from tests._reference import bilinear_loop, nearest_loop


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
