import pytest
import torch
from torch import nn

import stnkit
from stnkit import (
    LocalizationHead,
    ParallelSpatialTransformers,
    SerialSpatialTransformers,
    SpatialTransformer,
    param_groups,
    warp,
)
from stnkit.transforms import Attention

NAMES_2D = ["affine", "attention", "translation", "similarity", "projective", "tps"]


def loc_net(in_ch=1, size=16, feat=12):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_ch * size * size, feat), nn.ReLU())


def set_head(st, params):
    """Make the head output fixed params regardless of input (zero weights, bias = params)."""
    with torch.no_grad():
        st.head.weight.zero_()
        st.head.bias.copy_(params)


class TestLocalizationHead:
    def test_identity_init(self):
        ident = stnkit.Projective().identity()
        head = LocalizationHead(ident, in_features=7)
        torch.testing.assert_close(head(torch.randn(5, 7)), ident.expand(5, -1))
        assert head.weight.abs().sum() == 0

    def test_lazy(self):
        head = LocalizationHead(torch.tensor([1.0, 0.0, 0.0]))
        out = head(torch.randn(3, 9))
        assert head.weight.shape == (3, 9)
        torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0]]).expand(3, -1))

    def test_lazy_first_call_under_inference_mode_then_training(self):
        st = stnkit.SpatialTransformer(torch.nn.Flatten(), "tps", output_size=(6, 5))  # lazy head
        with torch.inference_mode():
            st(torch.rand(2, 1, 8, 8))
        assert not st.head.weight.is_inference()
        st(torch.rand(2, 1, 8, 8)).square().sum().backward()
        assert st.head.weight.grad.shape == (32, 64)

    def test_bound(self):
        head = LocalizationHead(torch.tensor([1.0, 0.0, 0.0]), in_features=4, bound=0.5)
        with torch.no_grad():
            head.weight.normal_(std=100.0)
        out = head(torch.randn(64, 4))
        assert ((out - torch.tensor([1.0, 0.0, 0.0])).abs() <= 0.5).all()
        assert (out - torch.tensor([1.0, 0.0, 0.0])).abs().max() > 0.4  # saturates near the bound, not at 0

    def test_errors(self):
        with pytest.raises(ValueError, match="bound must be positive"):
            LocalizationHead(torch.zeros(2), 3, bound=0.0)


class TestSpatialTransformer:
    @pytest.mark.parametrize("name", NAMES_2D)
    def test_identity_at_init(self, name):
        x = torch.rand(4, 3, 16, 16)
        st = SpatialTransformer(loc_net(3), name)
        out, params = st(x, return_params=True)
        torch.testing.assert_close(out, x, atol=2e-6, rtol=0)
        torch.testing.assert_close(params, st.transform.identity().expand(4, -1))

    @pytest.mark.parametrize(("size", "expected"), [(8, (8, 8)), ((6, 10), (6, 10)), (None, (16, 16))])
    def test_output_size(self, size, expected):
        st = SpatialTransformer(loc_net(), "affine", output_size=size)
        assert st(torch.rand(2, 1, 16, 16)).shape == (2, 1, *expected)

    def test_volume(self):
        loc = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6 * 6, 8))
        st = SpatialTransformer(loc, "affine3d", output_size=(3, 4, 5))
        x = torch.rand(2, 2, 6, 6, 6)
        assert st(x).shape == (2, 2, 3, 4, 5)
        torch.testing.assert_close(SpatialTransformer(loc, "affine3d")(x), x, atol=2e-6, rtol=0)

    def test_gradients_reach_localization(self):
        torch.manual_seed(1)
        st = SpatialTransformer(loc_net(), "affine")
        x = torch.rand(8, 1, 16, 16)
        target = torch.rand(8, 1, 16, 16)
        opt = torch.optim.SGD(st.parameters(), lr=0.1)
        for _ in range(2):  # head weights start at zero, so the loc net's gradient appears from step 2
            opt.zero_grad()
            nn.functional.mse_loss(st(x), target).backward()
            assert st.head.weight.grad.abs().sum() > 0
            opt.step()
        assert st.localization[1].weight.grad.abs().sum() > 0

    def test_feature_maps_inside_a_cnn(self):
        st = SpatialTransformer(nn.Sequential(nn.Conv2d(16, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten()),
                                "similarity")
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), st, nn.Conv2d(16, 2, 3))
        assert net(torch.rand(2, 1, 12, 12)).shape == (2, 2, 10, 10)

    def test_state_dict_has_no_derived_tensors(self):
        st = SpatialTransformer(loc_net(), "tps", in_features=12)
        st(torch.rand(1, 1, 16, 16))
        assert set(st.state_dict()) == {"localization.1.weight", "localization.1.bias", "head.weight", "head.bias"}

    def test_autocast_keeps_float32_grid(self):
        st = SpatialTransformer(loc_net(), "tps")
        x = torch.rand(2, 1, 16, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            params = st.predict_params(x)
            grid = st.transform.grid(params, (16, 16))
            out = st(x)
        assert params.dtype == torch.float32  # the head regresses in float32 under autocast
        assert grid.dtype == torch.float32
        torch.testing.assert_close(out.float(), x, atol=1e-2, rtol=0)

    def test_seeded_determinism(self):
        def run():
            torch.manual_seed(3)
            st = SpatialTransformer(loc_net(), "affine", in_features=12)
            set_head(st, torch.tensor([0.9, 0.1, 0.05, -0.1, 1.1, 0.0]))
            return st(torch.rand(2, 1, 16, 16))

        assert torch.equal(run(), run())

    def test_errors(self):
        st = SpatialTransformer(loc_net(), "affine")
        with pytest.raises(ValueError, match=r"SpatialTransformer with transform='affine' must have shape"):
            st(torch.rand(1, 16, 16))
        with pytest.raises(TypeError, match="floating-point"):
            st(torch.ones(1, 1, 16, 16, dtype=torch.uint8))
        with pytest.raises(ValueError, match="unknown transform"):
            SpatialTransformer(loc_net(), "shear")
        with pytest.raises(ValueError, match="unknown mode"):
            SpatialTransformer(loc_net(), mode="area")
        with pytest.raises(ValueError, match="output_size entries must be positive"):
            SpatialTransformer(loc_net(), output_size=(0, 3))
        with pytest.raises(ValueError, match="leave them unset when passing head="):
            SpatialTransformer(loc_net(), head=nn.Linear(12, 6), bound=0.5)

    def test_custom_head(self):
        head = nn.Linear(12, 6)
        st = SpatialTransformer(loc_net(), "affine", head=head)
        assert st.head is head
        x = torch.rand(3, 1, 16, 16)
        _, params = st(x, return_params=True)
        assert torch.allclose(params, head(st.localization(x).flatten(1)))
        assert {id(p) for p in head.parameters()} <= {id(p) for p in st.localization_parameters()}


class TestParamGroups:
    def test_scaled_localization_lr(self):
        st = SpatialTransformer(loc_net(), loc_lr_scale=0.1)
        model = nn.Sequential(st, nn.Flatten(), nn.Linear(256, 10))
        model(torch.rand(1, 1, 16, 16))
        groups = param_groups(model, lr=0.5)
        assert [g["lr"] for g in groups] == [0.5, pytest.approx(0.05)]
        loc_ids = {id(p) for p in st.localization_parameters()}
        assert {id(p) for p in groups[1]["params"]} == loc_ids
        assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
        torch.optim.SGD(groups)  # a valid optimizer spec


class TestParallel:
    def test_concat_and_list(self):
        branches = [SpatialTransformer(loc_net(2), "attention", output_size=8) for _ in range(3)]
        x = torch.rand(2, 2, 16, 16)
        out, params = ParallelSpatialTransformers(branches)(x, return_params=True)
        assert out.shape == (2, 6, 8, 8)
        assert len(params) == 3
        outs = ParallelSpatialTransformers(branches, merge="list")(x)
        assert [o.shape for o in outs] == [(2, 2, 8, 8)] * 3
        torch.testing.assert_close(torch.cat(outs, 1), out)

    def test_branches_differ(self):
        a = SpatialTransformer(loc_net(), "attention", output_size=8, in_features=12)
        b = SpatialTransformer(loc_net(), "attention", output_size=8, in_features=12)
        set_head(a, torch.tensor([0.5, -0.5, 0.0]))
        set_head(b, torch.tensor([0.5, 0.5, 0.0]))
        x = torch.rand(1, 1, 16, 16)
        out = ParallelSpatialTransformers([a, b])(x)
        torch.testing.assert_close(out[:, 0], x[:, 0, 4:12, 0:8])  # left half, exact pixels at s = 0.5
        torch.testing.assert_close(out[:, 1], x[:, 0, 4:12, 8:16])

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown merge"):
            ParallelSpatialTransformers([SpatialTransformer(loc_net())], merge="sum")


class TestSerial:
    def _stages(self):
        a = SpatialTransformer(loc_net(), "attention", output_size=12, in_features=12)
        b = SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(144, 6)), "projective", output_size=10,
                               in_features=6)
        pa = torch.tensor([0.8, 0.1, -0.05])
        pb = torch.tensor([1.0, 0.1, 0.05, -0.1, 0.9, 0.0, 0.05, -0.02])
        set_head(a, pa)
        set_head(b, pb)
        return a, b, pa, pb

    def test_composed_single_sampling(self):
        a, b, pa, pb = self._stages()
        x = torch.rand(2, 1, 16, 16)
        out, params = SerialSpatialTransformers([a, b])(x, return_params=True)
        total = Attention().to_matrix(pa[None]) @ stnkit.Projective().to_matrix(pb[None])
        expected = warp(x, stnkit.Projective().from_matrix(total).expand(2, -1), "projective", (10, 10))
        torch.testing.assert_close(out, expected)
        assert len(params) == 2

    def test_sequential_fallback(self):
        a, b, _, _ = self._stages()
        x = torch.rand(2, 1, 16, 16)
        out = SerialSpatialTransformers([a, b], compose=False)(x)
        torch.testing.assert_close(out, b(a(x)))
        composed = SerialSpatialTransformers([a, b])(x)
        assert not torch.allclose(out, composed)  # resampling twice differs from sampling once

    def test_tps_stage_falls_back(self):
        s = SerialSpatialTransformers([SpatialTransformer(loc_net(), "tps"), SpatialTransformer(loc_net())])
        assert not s.compose
        x = torch.rand(1, 1, 16, 16)
        torch.testing.assert_close(s(x), x, atol=2e-6, rtol=0)


class TestExport:
    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_export_round_trip(self, name):
        st = SpatialTransformer(loc_net(), name, output_size=(8, 8), in_features=12).eval()
        with torch.no_grad():
            st.head.weight.normal_(std=0.01)
        x = torch.rand(2, 1, 16, 16)
        expected = st(x)
        exported = torch.export.export(st, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
        x2 = torch.rand(2, 1, 16, 16)
        torch.testing.assert_close(exported.module()(x2), st(x2))

    @pytest.mark.slow
    def test_compile(self):
        st = SpatialTransformer(loc_net(), "tps", output_size=(8, 8), in_features=12)
        with torch.no_grad():
            st.head.weight.normal_(std=0.01)
        x = torch.rand(2, 1, 16, 16)
        compiled = torch.compile(st)
        torch.testing.assert_close(compiled(x), st(x), atol=1e-5, rtol=1e-5)


class TestLayerOptions:
    def test_fill_matches_functional(self):
        fill = torch.tensor([0.2, -0.4])
        st = SpatialTransformer(loc_net(2), "affine", output_size=8, in_features=12, padding_mode="fill",
                                fill_value=fill)
        zoom_out = torch.tensor([1.6, 0.2, 0.1, -0.1, 1.5, 0.0])
        set_head(st, zoom_out)
        x = torch.rand(3, 2, 16, 16)
        expected = warp(x, zoom_out.expand(3, -1), "affine", 8, padding_mode="fill", fill_value=fill)
        torch.testing.assert_close(st(x), expected)
        assert not torch.allclose(st(x), warp(x, zoom_out.expand(3, -1), "affine", 8))
        assert "fill_value" in dict(st.named_buffers())  # follows .to(device)
        assert "fill_value" not in st.state_dict()

    def test_learnable_fill(self):
        fill = nn.Parameter(torch.zeros(1))
        st = SpatialTransformer(loc_net(), "attention", output_size=8, in_features=12, padding_mode="fill",
                                fill_value=fill)
        set_head(st, torch.tensor([1.5, 0.0, 0.0]))
        st(torch.rand(2, 1, 16, 16)).sum().backward()
        assert fill.grad is not None
        assert fill.grad.item() > 0  # the border samples read the fill value
        assert any(p is fill for p in st.parameters())

    def test_antialias_matches_functional(self):
        st = SpatialTransformer(loc_net(size=32), "attention", output_size=8, in_features=12, antialias=True)
        p = torch.tensor([0.9, 0.05, -0.05])
        set_head(st, p)
        x = torch.rand(2, 1, 32, 32)
        torch.testing.assert_close(st(x), warp(x, p.expand(2, -1), "attention", 8, antialias=True))
        assert not torch.allclose(st(x), warp(x, p.expand(2, -1), "attention", 8))

    def test_serial_passes_options(self):
        fill = torch.tensor([0.7])
        a = SpatialTransformer(loc_net(), "attention", output_size=12, in_features=12)
        b = SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(144, 6)), "affine", output_size=6,
                               in_features=6, padding_mode="fill", fill_value=fill, antialias=True)
        pa, pb = torch.tensor([1.3, 0.1, 0.0]), torch.tensor([1.2, 0.0, 0.1, 0.0, 1.1, 0.0])
        set_head(a, pa)
        set_head(b, pb)
        x = torch.rand(2, 1, 16, 16)
        total = Attention().to_matrix(pa[None]) @ stnkit.Affine().to_matrix(pb[None])
        expected = warp(x, stnkit.Affine().from_matrix(total), "affine", 6, padding_mode="fill", fill_value=fill,
                        antialias=True)
        torch.testing.assert_close(SerialSpatialTransformers([a, b])(x), expected)

    def test_parallel_branches_keep_their_options(self):
        mk = lambda **kw: SpatialTransformer(nn.Flatten(), "attention", output_size=4, in_features=256, **kw)  # noqa: E731
        a, b = mk(), mk(padding_mode="fill", fill_value=1.0, antialias=True)
        for st in (a, b):
            set_head(st, torch.tensor([1.5, 0.0, 0.0]))
        x = torch.rand(2, 1, 16, 16)
        out = ParallelSpatialTransformers([a, b])(x)
        torch.testing.assert_close(out[:, 1:], b(x))
        assert not torch.allclose(out[:, :1], out[:, 1:])

    def test_warp_broadcasts_and_validates(self):
        st = SpatialTransformer(loc_net(), "affine", output_size=8)
        x = torch.rand(3, 1, 16, 16)
        p = torch.tensor([[0.9, 0.1, 0.0, -0.1, 0.8, 0.05]])
        torch.testing.assert_close(st.warp(x, p), st.warp(x, p.expand(3, -1)))
        assert st.warp(x, p, 5).shape == (3, 1, 5, 5)
        with pytest.raises(ValueError, match=r"output_size entries must be positive; got \(0, 5\)"):
            st.warp(x, p, output_size=(0, 5))
        with pytest.raises(ValueError, match=r"params for transform='affine' must have shape"):
            st.warp(x, torch.zeros(3, 5))
        with pytest.raises(ValueError, match="batch size mismatch"):
            st.warp(x, torch.zeros(2, 6))
        with pytest.raises(ValueError, match="more than the limit"):
            st.warp(x, p, output_size=(50000, 50000))

    def test_option_errors(self):
        with pytest.raises(ValueError, match="fill_value is only used with padding_mode='fill'"):
            SpatialTransformer(loc_net(), fill_value=0.5)
        with pytest.raises(ValueError, match=r"fill_value must have shape \(1,\)"):
            SpatialTransformer(loc_net(), padding_mode="fill", fill_value=torch.zeros(3))(torch.rand(1, 1, 16, 16))

    def test_meta_device(self):
        st = SpatialTransformer(loc_net(), "tps", output_size=(5, 6), in_features=12).to("meta")
        assert st(torch.empty(2, 1, 16, 16, device="meta")).shape == (2, 1, 5, 6)


class TestAutocastHead:
    @pytest.mark.parametrize("bound", [None, 0.5])
    def test_float32_params_under_bfloat16_autocast(self, bound):
        torch.manual_seed(0)
        head = LocalizationHead(stnkit.transforms.get("affine").identity(), in_features=32, bound=bound)
        with torch.no_grad():
            head.weight.normal_(std=0.3)
        feats = torch.randn(4, 32).bfloat16()  # what a localisation net yields under autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            params = head(feats)
            quantised = nn.functional.linear(feats, head.weight, head.bias)  # what autocast would have done
        assert params.dtype == torch.float32
        expected = head(feats.float())  # no autocast, the same float32-cast features
        torch.testing.assert_close(params, expected, rtol=1.3e-6, atol=1e-6)
        if bound is None:
            assert quantised.dtype == torch.bfloat16
            assert (quantised.float() - expected).abs().max() > 1e-3  # the error the float32 head avoids

    def test_layer_params_float32(self):
        st = SpatialTransformer(loc_net(), "affine", output_size=8, in_features=12)
        with torch.no_grad():
            st.head.weight.normal_(std=0.1)
        x = torch.rand(2, 1, 16, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, params = st(x, return_params=True)
            feats = st.localization(x)
        assert params.dtype == torch.float32
        torch.testing.assert_close(params, st.head(feats.float()), rtol=1.3e-6, atol=1e-6)
        assert out.dtype == torch.float32
