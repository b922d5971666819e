import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import stnkit
from stnkit import fields


def smooth_field(size, amplitude, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, len(size), *([3] * len(size)), generator=g, dtype=torch.float64)
    mode = "bicubic" if len(size) == 2 else "trilinear"
    return amplitude * F.interpolate(coarse, size=size, mode=mode, align_corners=True)


def smooth_image(size, n=1):
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s, dtype=torch.float64) for s in size], indexing="ij")
    img = sum(torch.sin(3 * c + k) for k, c in enumerate(coords))
    return img.expand(n, 1, *size).clone()


def interior(x, margin):
    idx = (slice(None), slice(None)) + (slice(margin, -margin),) * (x.ndim - 2)
    return x[idx]


class TestCompose:
    def test_constant_fields_add(self):
        a, b = torch.full((1, 2, 5, 5), 0.1), torch.full((2, 2, 5, 5), -0.3)
        torch.testing.assert_close(fields.compose(a, b), torch.full((2, 2, 5, 5), -0.2))

    @pytest.mark.parametrize("size", [(40, 40), (24, 24, 24)])
    @pytest.mark.parametrize(("units", "order"), [("normalized", "xy"), ("voxel", "ij")])
    def test_matches_sequential_warps(self, size, units, order):
        a = smooth_field(size, 0.08, seed=1)
        b = smooth_field(size, 0.08, seed=2)
        x = smooth_image(size)
        a_u = fields.convert(a, to_units=units, to_order=order)
        b_u = fields.convert(b, to_units=units, to_order=order)
        once = fields.warp(x, fields.compose(a_u, b_u, units=units, order=order), units=units, order=order)
        twice = fields.warp(fields.warp(x, a_u, units=units, order=order), b_u, units=units, order=order)
        margin = size[0] // 5
        err = (interior(once, margin) - interior(twice, margin)).abs().max()
        assert err < 0.02 if len(size) == 2 else err < 0.05
        no_compose = fields.warp(x, a_u + b_u, units=units, order=order)  # naive sum: a worse approximation
        assert err < 0.5 * (interior(no_compose, margin) - interior(twice, margin)).abs().max()

    def test_different_source_size_in_voxels(self):
        a = smooth_field((20, 20), 0.1, seed=3)
        b = smooth_field((12, 16), 0.1, seed=4)
        x = smooth_image((30, 24))
        src, mid = (30, 24), (20, 20)
        a_vox, b_vox = fields.to_voxel(a, src), fields.to_voxel(b, mid)
        d_vox = fields.compose(a_vox, b_vox, units="voxel", size=src)
        torch.testing.assert_close(fields.to_normalized(d_vox, src), fields.compose(a, b))
        torch.testing.assert_close(fields.warp(x, d_vox, units="voxel"), fields.warp(x, fields.compose(a, b)))

    def test_gradcheck(self):
        a = (0.2 * torch.rand(1, 2, 3, 4, dtype=torch.float64)).requires_grad_()
        b = (0.2 * torch.rand(1, 2, 3, 4, dtype=torch.float64)).requires_grad_()
        assert gradcheck(fields.compose, (a, b))
        assert gradgradcheck(fields.compose, (a, b))

    def test_errors(self):
        with pytest.raises(ValueError, match="must both be 2-D or both 3-D"):
            fields.compose(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4, 4))
        with pytest.raises(ValueError, match="batch size mismatch"):
            fields.compose(torch.zeros(2, 2, 4, 4), torch.zeros(3, 2, 4, 4))


class TestComposeTransform:
    @pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
    def test_transform_first_matches_sequential(self, transform):
        t = stnkit.transforms.get(transform)
        params = (t.identity().double() + 0.05 * torch.randn(1, t.num_params, dtype=torch.float64))
        d = smooth_field((32, 32), 0.06, seed=5)
        x = smooth_image((32, 32))
        once = fields.warp(x, fields.compose_transform(params, d, transform))
        twice = fields.warp(stnkit.warp(x, params, transform), d)
        assert (interior(once, 6) - interior(twice, 6)).abs().max() < 0.03

    def test_transform_first_is_exact_for_zero_field(self):
        theta = torch.tensor([[1.1, 0.2, 0.1, -0.1, 0.9, 0.05]], dtype=torch.float64)
        x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
        for align_corners in (False, True):
            d = fields.compose_transform(theta, torch.zeros(1, 2, 9, 11, dtype=torch.float64),
                                         align_corners=align_corners)
            torch.testing.assert_close(fields.warp(x, d, align_corners=align_corners),
                                       stnkit.warp(x, theta, align_corners=align_corners))

    def test_field_first_matches_sequential(self):
        theta = torch.tensor([[0.95, 0.1, 0.05, -0.05, 1.05, 0.0]], dtype=torch.float64)
        d = smooth_field((32, 32), 0.06, seed=6)
        x = smooth_image((32, 32))
        total = fields.compose_transform(theta, d, transform_first=False, output_size=(24, 28))
        assert total.shape == (1, 2, 24, 28)
        twice = stnkit.warp(fields.warp(x, d), theta, output_size=(24, 28))
        assert (interior(fields.warp(x, total), 5) - interior(twice, 5)).abs().max() < 0.03

    def test_3d(self):
        theta = stnkit.transforms.get("affine3d").identity().double()[None].clone()
        theta[0, 3] = 0.2
        d = fields.compose_transform(theta, torch.zeros(1, 3, 4, 5, 6, dtype=torch.float64), "affine3d")
        torch.testing.assert_close(d[:, 0], torch.full((1, 4, 5, 6), 0.2, dtype=torch.float64))

    def test_gradcheck(self):
        theta = torch.tensor([[0.93, 0.07, 0.03, -0.04, 0.91, 0.06]], dtype=torch.float64, requires_grad=True)
        d = (0.1 * torch.rand(1, 2, 3, 4, dtype=torch.float64)).requires_grad_()
        for first in (True, False):
            def fn(theta, d, first=first):
                return fields.compose_transform(theta, d, transform_first=first)

            assert gradcheck(fn, (theta, d))
            assert gradgradcheck(fn, (theta, d))

    def test_errors(self):
        with pytest.raises(ValueError, match="transform='affine3d' is 3-D but displacement"):
            fields.compose_transform(torch.zeros(1, 12), torch.zeros(1, 2, 4, 4), "affine3d")
        with pytest.raises(ValueError, match="params for transform='affine' must have shape"):
            fields.compose_transform(torch.zeros(1, 5), torch.zeros(1, 2, 4, 4))


class TestInvert:
    @pytest.mark.parametrize("size", [(32, 32), (12, 12, 12)])
    def test_residual_and_compose(self, size):
        d = smooth_field(size, 0.1, n=2, seed=7)
        u, residual = fields.invert(d, 30)
        assert residual.shape == (2,)
        assert residual.max() < 1e-4
        torch.testing.assert_close(fields.compose(d, u), torch.zeros_like(d), atol=1e-4, rtol=0)
        other_side = fields.compose(u, d)  # the left inverse too, away from the border, up to interpolation
        assert interior(other_side, size[0] // 4).abs().max() < 0.1 * d.abs().max()

    def test_voxel_units(self):
        d = smooth_field((24, 20), 0.1, seed=8)
        d_vox = fields.convert(d, to_units="voxel", to_order="ij")
        u_vox, res_vox = fields.invert(d_vox, units="voxel", order="ij")
        u, res = fields.invert(d)
        torch.testing.assert_close(fields.convert(u_vox, from_units="voxel", from_order="ij"), u)
        assert res.max() < 1e-4
        assert res_vox.max() < 1e-4 * 12

    def test_zero_iterations_and_errors(self):
        d = smooth_field((8, 8), 0.1)
        u, _ = fields.invert(d, 0)
        assert torch.equal(u, -d)
        with pytest.raises(ValueError, match="iterations must be an int >= 0"):
            fields.invert(d, -2)
