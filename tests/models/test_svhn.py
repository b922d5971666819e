"""The SVHN sequence networks: shapes, parameter counts, identity at initialisation, training, attended regions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnkit.data.multidigit import MultiDigitMNIST
from stnkit.losses import sequence_loss
from stnkit.models import count_params, create
from stnkit.models.svhn import SequenceNet, compose_frames, region_corners
from stnkit.modules import SpatialTransformer, param_groups
from stnkit.transforms import get

NAMES = ["svhn-cnn", "svhn-st-single", "svhn-st-multi"]
BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _conv(c_in, c_out, k=5):
    return c_in * k * k * c_out + c_out


def _fc(n_in, n_out):
    return n_in * n_out + n_out


# the baseline by hand: eight 5x5 convs, 4x4x192 -> fc 3072 -> fc 3072, length head (6) + five 11-way heads
CNN_PARAMS = (_conv(3, 48) + _conv(48, 64) + _conv(64, 128) + _conv(128, 160) + _conv(160, 192) + 3 * _conv(192, 192)
              + _fc(4 * 4 * 192, 3072) + _fc(3072, 3072) + _fc(3072, 6) + 5 * _fc(3072, 11))
HEAD = _fc(32, 6)  # identity-initialised affine regression of every localisation net
SINGLE_LOC = _conv(3, 32) + _conv(32, 32) + _fc(32 * 32 * 32, 32) + _fc(32, 32) + HEAD  # on 64x64, one max-pool
MULTI_LOC = sum(_fc(c * s * s, 32) + _fc(32, 32) + HEAD for c, s in ((3, 64), (48, 32), (64, 32), (128, 16)))


class TestShapes:
    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.parametrize(("batch", "channels", "size"), [(1, 1, 64), (3, 3, 64), (2, 1, 32)])
    def test_forward_backward(self, name, batch, channels, size):
        model = create(name, input_size=size, in_channels=channels, width=0.125)
        x = torch.rand(batch, channels, size, size, requires_grad=True)
        out = model(x)
        assert out.length.shape == (batch, 6)
        assert out.digits.shape == (batch, 5, 11)
        (out.length.sum() + out.digits.sum()).backward()
        assert x.grad is not None
        assert all(p.grad is not None for p in model.parameters())

    def test_feature_shapes(self):
        assert SequenceNet.feature_shapes(64, 3) == [(3, 64, 64), (48, 32, 32), (64, 32, 32), (128, 16, 16),
                                                     (160, 16, 16), (192, 8, 8), (192, 8, 8), (192, 4, 4)]
        feats = []
        net = SequenceNet(64, 1, width=0.25)
        hooks = [b.register_forward_pre_hook(lambda m, a: feats.append(tuple(a[0].shape[1:]))) for b in net.blocks]
        net(torch.rand(1, 1, 64, 64))
        for h in hooks:
            h.remove()
        assert feats == SequenceNet.feature_shapes(64, 1, 0.25)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"input of SequenceNet must have shape \(N, 3, 64, 64\); got"):
            create("svhn-cnn", width=0.125)(torch.rand(2, 1, 64, 64))
        with pytest.raises(ValueError, match="at least 16x16"):
            create("svhn-cnn", input_size=8)
        with pytest.raises(ValueError, match="2-D matrix transform"):
            create("svhn-st-multi", transform="tps", width=0.125)
        with pytest.raises(ValueError, match="num_transformers must be in"):
            create("svhn-st-multi", num_transformers=0, width=0.125)


class TestArchitecture:
    def test_parameter_counts_full_width(self):
        assert CNN_PARAMS == 23_399_133
        assert count_params(create("svhn-cnn")) == CNN_PARAMS
        assert count_params(create("svhn-st-single")) == CNN_PARAMS + SINGLE_LOC
        assert count_params(create("svhn-st-multi")) == CNN_PARAMS + MULTI_LOC

    def test_layers(self):
        net = create("svhn-cnn")
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == [48, 64, 128, 160, 192, 192, 192, 192]
        assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
        strides = [next(m for m in b.modules() if isinstance(m, nn.MaxPool2d)).stride for b in net.blocks]
        assert strides == [2, 1, 2, 1, 2, 1, 2, 1]
        drops = [any(isinstance(m, nn.Dropout) for m in b.modules()) for b in net.blocks]
        assert drops == [False] + [True] * 7  # every hidden layer but the first conv
        assert sum(isinstance(m, nn.Dropout) for m in net.fc) == 2
        assert all(m.p == 0.5 for m in net.modules() if isinstance(m, nn.Dropout))

    @pytest.mark.parametrize("name", NAMES)
    def test_batch_norm_option(self, name):
        plain, normed = create(name, width=0.125), create(name, width=0.125, batch_norm=True)
        assert not any(isinstance(m, BN) for m in plain.modules())
        for block in normed.blocks:
            kinds = [type(m) for m in block if not isinstance(m, nn.Dropout)]
            assert kinds[:3] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]  # BN before the ReLU
            assert block[0].bias is None
        assert [type(m) for m in normed.fc if isinstance(m, (nn.Linear, nn.BatchNorm1d))] == [nn.Linear,
                                                                                              nn.BatchNorm1d] * 2
        for st in normed.transformers.values():
            assert not any(isinstance(m, BN) for m in st.modules())
        extra = sum(2 * m.num_features for m in normed.modules() if isinstance(m, BN))
        biases = sum(b[0].out_channels for b in plain.blocks)
        assert count_params(normed) == count_params(plain) + extra - biases

    def test_transformer_placement(self):
        single, multi = create("svhn-st-single", width=0.125), create("svhn-st-multi", width=0.125)
        assert list(single.transformers) == ["0"]
        assert list(multi.transformers) == ["0", "1", "2", "3"]
        for st in multi.transformers.values():
            loc = [m for m in st.localization.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
            assert [type(m) for m in loc] == [nn.Linear, nn.Linear]
            assert not any(isinstance(m, nn.Dropout) for m in st.modules())
        loc_net = single.transformers["0"].localization
        loc = [type(m) for m in loc_net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        assert loc == [nn.Conv2d, nn.Conv2d, nn.Linear, nn.Linear]

    @pytest.mark.parametrize("name", NAMES[1:])
    def test_localisation_lr_is_a_tenth(self, name):
        model = create(name, width=0.125)
        groups = param_groups(model, lr=0.01)
        assert [g["lr"] for g in groups] == pytest.approx([0.01] + [0.001] * len(model.transformers))
        loc = {id(p) for st in model.transformers.values() for p in st.localization_parameters()}
        assert {id(p) for g in groups[1:] for p in g["params"]} == loc


class TestIdentityAtInit:
    @pytest.mark.parametrize("name", NAMES[1:])
    def test_equals_the_cnn(self, name):
        st_model = create(name, in_channels=1, width=0.125).eval()
        cnn = create("svhn-cnn", in_channels=1, width=0.125).eval()
        cnn.load_state_dict({k: v for k, v in st_model.state_dict().items() if not k.startswith("transformers.")})
        x = torch.rand(3, 1, 64, 64)
        a, b = st_model(x), cnn(x)
        torch.testing.assert_close(a.length, b.length)
        torch.testing.assert_close(a.digits, b.digits)


def _set_affine(st: SpatialTransformer, theta: list[float]) -> None:
    with torch.no_grad():
        st.head.weight.zero_()
        st.head.bias.copy_(torch.tensor(theta))  # a constant transform for every input


THETAS = [[0.8, 0.1, 0.05, -0.05, 0.85, 0.02], [0.9, 0.0, -0.03, 0.05, 0.9, 0.04],
          [0.85, -0.06, 0.0, 0.05, 0.85, -0.05], [0.85, 0.0, 0.04, 0.0, 0.9, 0.03]]


class TestAttendedRegions:
    def test_composition_matches_direct_warp(self):
        model = create("svhn-st-multi", in_channels=1, width=0.125).eval()
        for st, theta in zip(model.transformers.values(), THETAS):
            _set_affine(st, theta)
        x = torch.rand(2, 1, 64, 64)
        regions = model.attended_regions(x)
        assert [r.shape for r in regions] == [(2, 3, 3)] * 4
        # the feature-map chain as a pure resampling: on a linear image bilinear sampling and 2x2 average pooling
        # are exact (align_corners=False) while every sample stays inside the pixel centres' hull
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 129)[1::2], torch.linspace(-1, 1, 129)[1::2], indexing="ij")
        ramp = (0.3 + 0.2 * xs - 0.45 * ys).double()[None, None]  # (1, 1, 64, 64): linear in normalised coords
        cur = ramp
        for k, theta in enumerate(THETAS):
            if k in (1, 3):
                cur = F.avg_pool2d(cur, 2)  # the stride-2 pools of conv layers 0 and 2
            grid = F.affine_grid(torch.tensor(theta, dtype=torch.float64).view(1, 2, 3), list(cur.shape), False)
            cur = F.grid_sample(cur, grid, align_corners=False)
            direct = F.grid_sample(ramp, F.affine_grid(regions[k][:1, :2].double(), list(cur.shape), False),
                                   align_corners=False)
            torch.testing.assert_close(direct, cur, atol=1e-6, rtol=0)

    def test_products(self):
        m = [get("affine").to_matrix(torch.tensor([t])) for t in THETAS]
        out = compose_frames(m)
        torch.testing.assert_close(out[0], m[0])
        torch.testing.assert_close(out[3], m[0] @ m[1] @ m[2] @ m[3])

    def test_single(self):
        model = create("svhn-st-single", in_channels=1, width=0.125)
        _set_affine(model.transformers["0"], [0.5, 0.0, 0.25, 0.0, 0.25, -0.5])
        (region,) = model.attended_regions(torch.rand(1, 1, 64, 64))
        # x in [-0.25, 0.75] -> pixels [24, 56]; y in [-0.75, -0.25] -> pixels [8, 24]
        corners = region_corners(region, (64, 64))
        torch.testing.assert_close(corners[0], torch.tensor([[24.0, 8.0], [56.0, 8.0], [56.0, 24.0], [24.0, 24.0]]))

    def test_identity_is_the_whole_input(self):
        corners = region_corners(torch.eye(3)[None], (32, 48))
        torch.testing.assert_close(corners[0], torch.tensor([[0.0, 0.0], [48.0, 0.0], [48.0, 32.0], [0.0, 32.0]]))
        model = create("svhn-st-multi", in_channels=1, width=0.125)  # identity-initialised
        for region in model.attended_regions(torch.rand(2, 1, 64, 64)):
            torch.testing.assert_close(region, torch.eye(3).expand(2, 3, 3))


class TestTrainsOnTheProxy:
    @pytest.mark.parametrize("name", NAMES)
    def test_loss_decreases(self, name, mnist_dir):
        from stnkit.data.idx import load_mnist

        torch.manual_seed(0)
        images, labels = load_mnist(mnist_dir, split="test")
        data = MultiDigitMNIST(images[:1000], labels[:1000], 64)
        x, length, digits = data.get_batch(range(64))
        model = create(name, in_channels=1, width=0.25, dropout=0.0)
        opt = torch.optim.Adam(param_groups(model, lr=3e-4))
        losses = []
        for _ in range(15):
            loss = sequence_loss(*model(x), length, digits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(13.78, abs=0.1)  # about log 6 + 5 log 11: uniform heads at init
        assert sum(losses[-3:]) / 3 < 0.88 * losses[0], losses  # learns at least the length and "no digit" priors
