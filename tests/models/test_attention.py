import pytest
import torch
from torch import nn

from stnkit.models import CNN, STClassifier, count_params, create


class TestSTCNNAttention:
    @pytest.mark.parametrize(("size", "crop", "pool"), [(120, 30, 2), (60, 20, 1), (120, 20, 2)])
    def test_shapes_and_low_res_localisation(self, size, crop, pool):
        model = create("st-cnn-attention", input_size=size, crop=crop, channels=(8, 16))
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
        assert seen == [size // (2 * pool)]  # the localisation convolutions see ~30x30, never the full input
        assert x.grad is not None
        assert all(p.grad is not None for p in model.parameters())

    def test_identity_crop_is_the_whole_input(self):
        model = create("st-cnn-attention", input_size=60, crop=30, channels=(4, 8))
        x = torch.rand(2, 1, 60, 60)
        warped, params = model.transform(x)
        assert torch.allclose(params, torch.tensor([[1.0, 0.0, 0.0]]).expand(2, 3))
        assert torch.allclose(warped, nn.functional.avg_pool2d(x, 2), atol=1e-5)  # 2x down, bilinear at centres

    def test_cheaper_than_the_full_resolution_cnn(self):
        # same conv widths; the attention model's convolutions run on the crop, not the 120x120 input
        st = create("st-cnn-attention", input_size=120, crop=30, channels=(16, 32))
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
