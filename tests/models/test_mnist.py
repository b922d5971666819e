import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnkit.models import CNN, FCN, STClassifier, count_params, create, list_models, summary
from stnkit.models.localization import cnn_localization_params, fcn_localization_params

ST_TRANSFORMS = ["affine", "projective", "tps", "attention", "similarity", "translation"]
CASES = [(name, None) for name in ("fcn", "cnn")] + [
    (name, t) for name in ("st-fcn", "st-cnn") for t in ST_TRANSFORMS
]


def _make(name, transform, size=42, **kw):
    if transform is not None:
        kw.update(transform=transform)
    return create(name, input_size=size, **kw)


class TestShapes:
    @pytest.mark.parametrize(("name", "transform"), CASES)
    def test_forward_backward(self, name, transform):
        kw = {"st_downsample": "output_size"} if transform else {}
        model = _make(name, transform, **kw)
        x = torch.rand(3, 1, 42, 42, requires_grad=True)
        logits = model(x)
        assert logits.shape == (3, 10)
        logits.sum().backward()
        assert x.grad is not None
        assert all(p.grad is not None for p in model.parameters())

    @pytest.mark.parametrize("name", [n for n in list_models() if not n.endswith("mnist3d")  # 3-D: volumes
                                      and not n.startswith("svhn-")])  # sequence heads: tests/models/test_svhn.py
    @pytest.mark.parametrize(("size", "downsample"), [(28, None), (42, "avgpool"), (60, "output_size")])
    def test_sizes(self, name, size, downsample):
        kw = {"st_downsample": downsample} if name.startswith("st-") else {}
        assert create(name, input_size=size, in_channels=2, num_classes=7, **kw)(torch.rand(2, 2, size, size)).shape \
            == (2, 7)


class TestParameterParity:
    @pytest.mark.parametrize(("size", "downsample"), [(28, None), (42, None), (42, "output_size"), (42, "avgpool"),
                                                      (60, "output_size")])
    @pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
    def test_within_5_percent(self, size, downsample, transform):
        counts = {name: count_params(create(name, input_size=size, **(
            {"transform": transform, "st_downsample": downsample} if name.startswith("st-") else {})))
            for name in ("fcn", "cnn", "st-fcn", "st-cnn")}
        lo, hi = min(counts.values()), max(counts.values())
        assert hi / lo < 1.05, counts

    def test_budget_is_respected(self):
        for budget in (50_000, 300_000):
            n = count_params(create("st-cnn", input_size=42, st_downsample="output_size", param_budget=budget))
            assert abs(n - budget) / budget < 0.05

    def test_num_params_formulas(self):
        assert FCN.num_params(784, (32, 16)) == count_params(FCN(28, hidden=(32, 16)))
        assert CNN.num_params((1, 42, 42), (8, 16)) == count_params(CNN(42, channels=(8, 16)))
        st = create("st-fcn", input_size=28)
        assert fcn_localization_params(784) == count_params(st.transformer.localization)
        st = create("st-cnn", input_size=42)
        assert cnn_localization_params((42, 42)) == count_params(st.transformer.localization)


class TestArchitecture:
    def _weight_layers(self, module):
        return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    @pytest.mark.parametrize("name", ["fcn", "cnn", "st-fcn", "st-cnn"])
    def test_three_weight_layers_in_classifier(self, name):
        model = create(name, input_size=42)
        classifier = model.classifier if isinstance(model, STClassifier) else model
        assert len(self._weight_layers(classifier)) == 3

    def test_cnn_kernels_and_pools(self):
        net = create("cnn", input_size=42).net
        convs = [m for m in net if isinstance(m, nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(9, 9), (7, 7)]
        assert sum(isinstance(m, nn.MaxPool2d) for m in net) == 2

    def test_st_fcn_localization(self):
        loc = create("st-fcn", input_size=42).transformer.localization
        assert [m.out_features for m in loc if isinstance(m, nn.Linear)] == [32, 32, 32]

    def test_st_cnn_localization(self):
        loc = create("st-cnn", input_size=42).transformer.localization
        assert isinstance(loc[0], nn.AvgPool2d)  # on the input downsampled by 2
        convs = [m for m in loc if isinstance(m, nn.Conv2d)]
        assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (20, (5, 5))]
        assert [m.out_features for m in loc if isinstance(m, nn.Linear)] == [20]

    def test_tps_has_16_control_points(self):
        assert create("st-cnn", input_size=42, transform="tps").transformer.transform.num_control_points == 16


class TestIdentityAtInit:
    @pytest.mark.parametrize("name", ["st-fcn", "st-cnn"])
    @pytest.mark.parametrize("transform", ["affine", "projective", "tps", "attention"])
    def test_identity_warp(self, name, transform):
        model = create(name, input_size=42, transform=transform)
        x = torch.rand(2, 1, 42, 42)
        warped, params = model.transform(x)
        torch.testing.assert_close(warped, x, atol=1e-5, rtol=0)
        ident = model.transformer.transform.identity()
        torch.testing.assert_close(params, ident.expand_as(params))

    def test_downsampling_options_agree_at_identity(self):
        # half-size sampling at the identity reads the centre of each 2x2 block: the 2x2 average (even sizes)
        x = torch.rand(2, 1, 42, 42)
        a = create("st-cnn", input_size=42, st_downsample="output_size")
        warped, _ = a.transform(x)
        torch.testing.assert_close(warped, F.avg_pool2d(x, 2), atol=1e-5, rtol=0)
        b = create("st-cnn", input_size=42, st_downsample="avgpool")
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(x), b(x), atol=1e-4, rtol=0)


class TestErrors:
    def test_wrong_input_shape(self):
        with pytest.raises(ValueError, match=r"input of CNN must have shape \(N, 1, 42, 42\); got \(2, 1, 28, 28\)"):
            create("cnn", input_size=42)(torch.rand(2, 1, 28, 28))

    def test_3d_transform(self):
        with pytest.raises(ValueError, match="not a 2-D transform"):
            create("st-cnn", input_size=42, transform="affine3d")

    def test_unknown_transform(self):
        with pytest.raises(ValueError, match="unknown transform"):
            create("st-fcn", transform="warp9")

    def test_bad_downsample(self):
        with pytest.raises(ValueError, match="st_downsample"):
            create("st-cnn", input_size=42, st_downsample="maxpool")

    def test_too_small_for_st_cnn(self):
        with pytest.raises(ValueError, match="at least 26x26"):
            create("st-cnn", input_size=20)


class TestSummary:
    def test_counts(self):
        model = create("st-cnn", input_size=42, st_downsample="output_size")
        text = summary(model, (1, 1, 42, 42))
        assert f"total parameters: {count_params(model):,}" in text
        assert "(1, 1, 21, 21)" in text  # the transformer's half-size output
        assert model.training  # restored
