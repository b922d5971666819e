import pytest
import torch

from stnkit import fields


def field(size, n=2):
    return torch.randn(n, len(size), *size, dtype=torch.float64)


class TestConvert:
    @pytest.mark.parametrize("size", [(4, 7), (3, 5, 6)])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_round_trips(self, size, align_corners):
        d = field(size)
        for fu in fields.UNITS:
            for fo in fields.ORDERS:
                for tu in fields.UNITS:
                    for to in fields.ORDERS:
                        kw = {"size": (9, 8, 7)[-len(size):], "align_corners": align_corners}
                        there = fields.convert(d, from_units=fu, from_order=fo, to_units=tu, to_order=to, **kw)
                        back = fields.convert(there, from_units=tu, from_order=to, to_units=fu, to_order=fo, **kw)
                        torch.testing.assert_close(back, d, rtol=1e-15, atol=1e-15)

    def test_voxel_scale_per_axis(self):
        d = torch.ones(1, 2, 4, 8)
        torch.testing.assert_close(fields.to_normalized(d)[0, :, 0, 0], torch.tensor([2 / 8, 2 / 4]))
        torch.testing.assert_close(fields.to_normalized(d, order="ij")[0, :, 0, 0], torch.tensor([2 / 4, 2 / 8]))
        torch.testing.assert_close(fields.to_normalized(d, (5, 11), align_corners=True)[0, :, 0, 0],
                                   torch.tensor([2 / 10, 2 / 4]))
        torch.testing.assert_close(fields.to_voxel(fields.to_normalized(d, (5, 11)), (5, 11)), d)

    def test_order_swaps(self):
        d = field((3, 4, 5))
        assert torch.equal(fields.xy_to_ij(d)[:, 0], d[:, 2])
        assert torch.equal(fields.ij_to_xy(fields.xy_to_ij(d)), d)
        assert torch.equal(fields.convert(d, from_order="ij"), d.flip(1))

    def test_errors(self):
        d = field((4, 4))
        with pytest.raises(ValueError, match=r"size must be 2 positive ints \(H, W\)"):
            fields.to_normalized(d, (4, 4, 4))
        with pytest.raises(ValueError, match="unknown units 'px'"):
            fields.convert(d, from_units="px")
        with pytest.raises(ValueError, match="unknown order"):
            fields.to_voxel(d, order="zyx")
        with pytest.raises(TypeError, match="displacement must be a torch.Tensor"):
            fields.xy_to_ij([1.0, 2.0])
        with pytest.raises(ValueError, match="grid must have shape"):
            fields.grid_to_displacement(torch.zeros(1, 4, 4, 3))
