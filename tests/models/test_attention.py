import pytest
import torch
from torch import nn

from stnkit.models import CNN, STClassifier, count_params, create
from stnkit.models.localization import SoftArgmaxWindowHead


class TestSTCNNAttention:
    @pytest.mark.parametrize("localization", ["heatmap", "cnn"])
    @pytest.mark.parametrize(("size", "crop"), [(120, 30), (60, 20), (120, 20)])
    def test_shapes_and_low_res_localisation(self, size, crop, localization):
        model = create("st-cnn-attention", input_size=size, crop=crop, channels=(8, 16), localization=localization)
        assert isinstance(model, STClassifier)
        assert model.transformer.transform.name == "attention"
        assert model.transformer.output_size == (crop, crop)
        assert model.classifier.input_shape == (1, crop, crop)
        conv = next(m for m in model.transformer.localization.modules() if isinstance(m, nn.Conv2d))
        seen = []
        hook = conv.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[-1]))
        x = torch.rand(2, 1, size, size, requires_grad=True)
        model(x).sum().backward()
        hook.remove()
        assert seen == [30]  # the localisation convolutions see ~30x30, never the full input
        assert x.grad is not None
        assert all(p.grad is not None for p in model.parameters())

    def test_identity_crop_is_the_whole_input(self):
        model = create("st-cnn-attention", input_size=60, crop=30, channels=(4, 8), localization="cnn")
        x = torch.rand(2, 1, 60, 60)
        warped, params = model.transform(x)
        assert torch.allclose(params, torch.tensor([[1.0, 0.0, 0.0]]).expand(2, 3))
        assert torch.allclose(warped, nn.functional.avg_pool2d(x, 2), atol=1e-5)  # 2x down, bilinear at centres

    def test_heatmap_window_starts_centred_within_its_scale_range(self):
        model = create("st-cnn-attention", input_size=120, crop=20, channels=(4, 8))
        head = model.transformer.head
        assert isinstance(head, SoftArgmaxWindowHead)
        assert (head.lo, head.hi) == pytest.approx((20 / 120, 2.5 * 20 / 120))
        with torch.no_grad():
            _, params = model.transform(torch.rand(3, 1, 120, 120))
        assert torch.allclose(params, torch.tensor([(head.lo + head.hi) / 2, 0.0, 0.0]).expand(3, 3), atol=1e-6)
        custom = create("st-cnn-attention", input_size=120, crop=20, channels=(4, 8), scale_range=(0.2, 0.3),
                        init_scale=0.22)
        with torch.no_grad():
            assert float(custom.transform(torch.rand(1, 1, 120, 120))[1][0, 0]) == pytest.approx(0.22)

    def test_bad_localization_choices(self):
        with pytest.raises(ValueError, match="unknown localization 'fc'"):
            create("st-cnn-attention", input_size=60, localization="fc")
        with pytest.raises(ValueError, match="heatmap localisation places an attention window"):
            create("st-cnn-attention", input_size=60, transform="affine", localization="heatmap")
        with pytest.raises(ValueError, match="bound applies to the 'cnn' localisation"):
            create("st-cnn-attention", input_size=60, bound=0.5)
        # "auto": the heatmap for the attention transform, the ST-CNN net for any other
        assert isinstance(create("st-cnn-attention", input_size=60).transformer.head, SoftArgmaxWindowHead)
        affine = create("st-cnn-attention", input_size=60, transform="affine")
        assert affine.transformer.transform.name == "affine"
        assert not isinstance(affine.transformer.head, SoftArgmaxWindowHead)

    @pytest.mark.parametrize("localization", ["heatmap", "cnn"])
    def test_cheaper_than_the_full_resolution_cnn(self, localization):
        # same conv widths; the attention model's convolutions run on the crop, not the 120x120 input
        st = create("st-cnn-attention", input_size=120, crop=30, channels=(16, 32), localization=localization)
        cnn = create("cnn", input_size=120, channels=(16, 32))
        assert isinstance(cnn, CNN)

        def conv_macs(model, x):
            macs = []

            def hook(m, inp, out):
                macs.append(out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups)

            hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
            model(x)
            for h in hs:
                h.remove()
            return sum(macs)

        x = torch.rand(1, 1, 120, 120)
        assert conv_macs(st, x) * 8 < conv_macs(cnn, x)
        assert count_params(st) < count_params(cnn)
