import pytest
import torch
from torch import nn

import stnkit
from stnkit import fields
from stnkit.fields import AffineDenseCascade, DenseSpatialTransformer


def flow_net(in_channels=2, dims=2, width=8):
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(conv(in_channels, width, 3, padding=1), nn.Tanh(), conv(width, dims, 3, padding=1))


def smooth_image(size, n=2):
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")
    img = sum(torch.sin(3 * c + k) for k, c in enumerate(coords))
    return (img + 0.1 * torch.arange(n).reshape(n, 1, *([1] * len(size)))).reshape(n, 1, *size)


class TestDenseSpatialTransformer:
    @pytest.mark.parametrize("diffeomorphic", [False, True])
    @pytest.mark.parametrize(("dims", "size"), [(2, (12, 10)), (3, (4, 6, 5))])
    def test_identity_at_init(self, dims, size, diffeomorphic):
        st = DenseSpatialTransformer(flow_net(2, dims), diffeomorphic=diffeomorphic)
        moving, fixed = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
        out, disp = st(moving, fixed, return_displacement=True)
        assert disp.shape == (2, dims, *size)
        assert disp.abs().max() == 0
        torch.testing.assert_close(out, moving, atol=1e-6, rtol=0)
        assert st.flow() is st.net[2]
        assert st.flow().weight.abs().max() == 0

    def test_learns_a_translation(self):
        moving = smooth_image((16, 16))
        fixed = fields.warp(moving, torch.full((1, 2, 16, 16), 0.1), padding_mode="border")
        st = DenseSpatialTransformer(flow_net(2), padding_mode="border")
        opt = torch.optim.Adam(st.parameters(), lr=2e-2)
        first = fields.mse(st(moving, fixed), fixed).item()
        for _ in range(25):
            opt.zero_grad()
            loss = fields.mse(st(moving, fixed), fixed)
            loss.backward()
            opt.step()
        assert loss.item() < 0.5 * first

    def test_single_input_voxel_units_and_fill(self):
        st = DenseSpatialTransformer(flow_net(3), units="voxel", order="ij", padding_mode="fill",
                                     fill_value=torch.tensor([1.0, 2.0, 3.0]))
        with torch.no_grad():
            st.flow().bias.fill_(100.0)  # every location reads far outside: the fill colour
        out = st(torch.rand(2, 3, 6, 6))
        torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[1.0, 2.0, 3.0]] * 2))
        assert "fill_value" in dict(st.named_buffers())
        st.reset_parameters()
        assert st.flow().bias.abs().max() == 0

    def test_state_dict_has_no_duplicates(self):
        st = DenseSpatialTransformer(flow_net())
        assert set(st.state_dict()) == {f"net.{k}" for k in flow_net().state_dict()}

    def test_errors(self):
        with pytest.raises(ValueError, match="net must contain a convolution"):
            DenseSpatialTransformer(nn.Identity())
        with pytest.raises(ValueError, match="is lazy"):
            DenseSpatialTransformer(nn.Sequential(nn.Conv2d(2, 4, 3), nn.LazyConv2d(2, 3)))
        with pytest.raises(ValueError, match="steps must be an int >= 0"):
            DenseSpatialTransformer(flow_net(), diffeomorphic=True, steps=-1)
        with pytest.raises(ValueError, match="unknown units"):
            DenseSpatialTransformer(flow_net(), units="mm")
        st = DenseSpatialTransformer(flow_net())
        with pytest.raises(ValueError, match="fixed must have the batch size and rank of moving"):
            st(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))


def cascade(dims=2, size=(16, 16), align_corners=False):
    n_in = 2 * torch.Size(size).numel()
    loc = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 8), nn.Tanh())
    transform = "affine" if dims == 2 else "affine3d"
    parametric = stnkit.SpatialTransformer(loc, transform, in_features=8, align_corners=align_corners)
    dense = DenseSpatialTransformer(flow_net(2, dims), padding_mode="border", align_corners=align_corners)
    return AffineDenseCascade(parametric, dense)


class TestAffineDenseCascade:
    @pytest.mark.parametrize(("dims", "size"), [(2, (12, 10)), (3, (4, 5, 6))])
    def test_identity_at_init(self, dims, size):
        model = cascade(dims, size)
        moving = torch.rand(2, 1, *size)
        out, params, disp, total = model(moving, torch.rand(2, 1, *size), return_parts=True)
        torch.testing.assert_close(out, moving, atol=1e-6, rtol=0)
        assert params.shape == (2, 6 if dims == 2 else 12)
        assert disp.abs().max() == 0
        assert total.abs().max() < 1e-6

    def test_matches_warp_of_warp(self):
        model = cascade()
        with torch.no_grad():
            model.parametric.head.bias.copy_(torch.tensor([1.05, 0.1, 0.05, -0.08, 0.95, -0.03]))
            model.dense.flow().weight.normal_(0, 0.01)
        moving, fixed = smooth_image((16, 16)), smooth_image((16, 16)).flip(-1)
        out, params, disp, _ = model(moving, fixed, return_parts=True)
        twice = model.dense.warp(model.parametric.warp(moving, params), disp)
        assert disp.abs().max() > 0.01
        assert (params - model.parametric.transform.identity()).abs().max() > 0.04
        assert (out - twice)[..., 3:-3, 3:-3].abs().max() < 0.05

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_samples_once(self, align_corners):
        size = (10, 12)
        model = cascade(size=size, align_corners=align_corners)
        half_pixel = 1 / 12 if not align_corners else 1 / 11  # half of one pixel's width in normalised units
        with torch.no_grad():
            model.parametric.head.bias.copy_(torch.tensor([1.0, 0.0, half_pixel, 0.0, 1.0, 0.0]))
            model.dense.flow().bias.copy_(torch.tensor([-half_pixel, 0.0]))  # undoes the translation
        moving = torch.rand(2, 1, *size)
        out, params, disp, total = model(moving, torch.rand(2, 1, *size), return_parts=True)
        torch.testing.assert_close(out, moving, atol=1e-5, rtol=0)  # one sampling at the identity: no blur
        twice = model.dense.warp(model.parametric.warp(moving, params), disp)
        assert (twice - moving)[..., 2:-2].abs().max() > 0.05  # two half-pixel samplings blur

    def test_errors(self):
        loc = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))
        with pytest.raises(ValueError, match="must share align_corners"):
            AffineDenseCascade(stnkit.SpatialTransformer(loc, align_corners=True), DenseSpatialTransformer(flow_net()))
