import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from stnkit import fields
from stnkit.grid import identity_grid
from tests.fields._loops import warp_loop


def random_field(n, size, scale=0.2, dtype=torch.float64):
    return scale * torch.randn(n, len(size), *size, dtype=dtype)


class TestWarp:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize(("units", "order"), [("normalized", "xy"), ("voxel", "ij"), ("voxel", "xy"),
                                                  ("normalized", "ij")])
    @pytest.mark.parametrize(("in_size", "out_size"), [((5, 6), (5, 6)), ((5, 6), (4, 7)), ((3, 4, 5), (3, 4, 5)),
                                                       ((3, 4, 5), (4, 3, 3))])
    def test_matches_reference(self, in_size, out_size, units, order, align_corners):
        x = torch.rand(2, 2, *in_size, dtype=torch.float64)
        scale = 1.5 if units == "voxel" else 0.4
        d = random_field(2, out_size, scale)
        out = fields.warp(x, d, units=units, order=order, align_corners=align_corners)
        assert out.shape == (2, 2, *out_size)
        for n in range(2):
            ref = warp_loop(x[n].numpy(), d[n].numpy(), units, order, align_corners)
            np.testing.assert_allclose(out[n].numpy(), ref, atol=1e-12)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(6, 7), (3, 4, 5)])
    def test_identity(self, size, align_corners):
        x = torch.rand(2, 3, *size)
        for units in fields.UNITS:
            out = fields.warp(x, torch.zeros(1, len(size), *size), units=units, align_corners=align_corners)
            torch.testing.assert_close(out, x, atol=1e-6, rtol=0)

    def test_translation_by_one_voxel(self):
        x = torch.rand(1, 1, 6, 7)
        d = torch.zeros(1, 2, 6, 7)
        d[:, 0] = 1.0  # x: one pixel to the right, in voxel units and xy order
        out = fields.warp(x, d, units="voxel")
        torch.testing.assert_close(out[..., :-1], x[..., 1:])
        assert out[..., -1].abs().max() == 0

    def test_fill_and_padding_options(self):
        x = torch.rand(2, 3, 5, 5)
        far = torch.full((1, 2, 5, 5), 10.0)
        out = fields.warp(x, far, padding_mode="fill", fill_value=torch.tensor([0.1, 0.2, 0.3]))
        torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[0.1, 0.2, 0.3]] * 2))
        border = fields.warp(x, far, padding_mode="border")
        torch.testing.assert_close(border[:, :, 2, 2], x[:, :, -1, -1])
        nearest = fields.warp(x, torch.zeros(2, 2, 5, 5), mode="nearest")
        torch.testing.assert_close(nearest, x)

    @pytest.mark.parametrize(("units", "order"), [("normalized", "xy"), ("voxel", "ij")])
    @pytest.mark.parametrize("size", [(3, 4), (2, 3, 3)])
    def test_gradcheck(self, size, units, order):
        x = torch.rand(1, 2, *size, dtype=torch.float64, requires_grad=True)
        d = (0.3 * torch.rand(1, len(size), *size, dtype=torch.float64) + 0.05).requires_grad_()

        def fn(x, d):
            return fields.warp(x, d, units=units, order=order, padding_mode="border")

        assert gradcheck(fn, (x, d))
        assert gradgradcheck(fn, (x, d))

    def test_broadcast_field_and_dtype(self):
        x = torch.rand(3, 1, 4, 4)
        d = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
        assert fields.warp(x, d).dtype == torch.float32
        assert fields.warp(x.double(), torch.zeros(3, 2, 4, 4)).dtype == torch.float64

    def test_errors(self):
        x = torch.rand(2, 1, 4, 4)
        with pytest.raises(ValueError, match=r"displacement must have shape \(N, 2, H, W\)"):
            fields.warp(x, torch.zeros(2, 3, 4, 4))
        with pytest.raises(ValueError, match="input for a 3-D displacement"):
            fields.warp(x, torch.zeros(2, 3, 4, 4, 4))
        with pytest.raises(ValueError, match="batch size mismatch"):
            fields.warp(x, torch.zeros(3, 2, 4, 4))
        with pytest.raises(ValueError, match="unknown units"):
            fields.warp(x, torch.zeros(2, 2, 4, 4), units="mm")
        with pytest.raises(ValueError, match="unknown order"):
            fields.warp(x, torch.zeros(2, 2, 4, 4), order="yx")
        with pytest.raises(ValueError, match="unknown mode"):
            fields.warp(x, torch.zeros(2, 2, 4, 4), mode="cubic")
        with pytest.raises(TypeError, match="displacement must have a floating-point"):
            fields.warp(x, torch.zeros(2, 2, 4, 4, dtype=torch.long))
        with pytest.raises(TypeError, match="input must be a torch.Tensor"):
            fields.warp(np.zeros((2, 1, 4, 4)), torch.zeros(2, 2, 4, 4))


class TestIntegrate:
    def test_zero_steps_and_zero_field(self):
        v = random_field(2, (5, 5))
        assert torch.equal(fields.integrate(v, 0), v)
        assert fields.integrate(torch.zeros(1, 2, 5, 5)).abs().max() == 0

    @pytest.mark.parametrize("size", [(6, 6), (4, 5, 6)])
    def test_constant_velocity_is_translation(self, size):
        v = torch.zeros(1, len(size), *size, dtype=torch.float64)
        v[:, 0] = 0.3
        d = fields.integrate(v, 7, padding_mode="border")
        torch.testing.assert_close(d, v)

    def test_matches_manual_squaring(self):
        v = random_field(2, (6, 7), 0.3)
        d = v / 8
        for _ in range(3):
            d = d + fields.warp(d, d)
        torch.testing.assert_close(fields.integrate(v, 3), d)

    def test_diffeomorphic_where_displacement_folds(self):
        torch.manual_seed(3)
        smooth = torch.nn.functional.interpolate(torch.randn(1, 2, 4, 4, dtype=torch.float64), size=(32, 32),
                                                 mode="bicubic", align_corners=True)
        v = 0.4 * smooth
        assert fields.folding_fraction(v) > 0.2  # the velocity used as a displacement folds
        assert fields.folding_fraction(fields.integrate(v, 7, padding_mode="border")) == 0

    def test_gradcheck(self):
        v = (0.2 * torch.rand(1, 2, 3, 4, dtype=torch.float64)).requires_grad_()
        assert gradcheck(lambda v: fields.integrate(v, 2, units="voxel", order="ij"), (v,))
        assert gradgradcheck(lambda v: fields.integrate(v, 2), (v,))

    def test_errors(self):
        with pytest.raises(ValueError, match="steps must be an int >= 0"):
            fields.integrate(torch.zeros(1, 2, 4, 4), -1)
        with pytest.raises(ValueError, match="velocity must have shape"):
            fields.integrate(torch.zeros(1, 1, 4, 4))
        with pytest.raises(ValueError, match="unknown padding_mode"):
            fields.integrate(torch.zeros(1, 2, 4, 4), padding_mode="wrap")


def test_grid_round_trip():
    d = random_field(2, (4, 5))
    for units in fields.UNITS:
        for order in fields.ORDERS:
            grid = fields.displacement_to_grid(d, units=units, order=order, align_corners=True)
            assert grid.shape == (2, 4, 5, 2)
            back = fields.grid_to_displacement(grid, units=units, order=order, align_corners=True)
            torch.testing.assert_close(back, d)
    torch.testing.assert_close(fields.displacement_to_grid(torch.zeros(1, 2, 4, 5)), identity_grid((4, 5)))
