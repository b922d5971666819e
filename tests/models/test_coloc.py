import pytest
import torch
from torch import nn

from stnkit.models import CNN
from stnkit.models.coloc import CNNEmbedding, coloc_localization, coloc_transformer


class TestColocLocalization:
    def test_paper_architecture(self):
        net, f = coloc_localization(84)
        convs = [m for m in net if isinstance(m, nn.Conv2d)]
        assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(8, (9, 9), (4, 4))]
        assert [m.kernel_size for m in net if isinstance(m, nn.MaxPool2d)] == [2]
        assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [8, 8]
        assert net(torch.rand(3, 1, 84, 84)).shape == (3, f)

    def test_errors(self):
        with pytest.raises(ValueError, match="at least 17x17"):
            coloc_localization(12)


class TestColocTransformer:
    def test_window_stays_inside_and_in_range(self):
        st = coloc_transformer()
        with torch.no_grad():
            st.head.weight.normal_(0, 50.0)  # extreme regressions
        _, params = st(torch.rand(64, 1, 84, 84), return_params=True)
        s, t = params[:, 0], params[:, 1:]
        assert s.min() >= 0.25
        assert s.max() <= 0.6
        assert torch.all(t.abs() <= (1 - s[:, None]) + 1e-6)  # |t| + s <= 1: the window inside the image
        assert t.abs().max() > 0.3

    def test_plain_attention_crop(self):
        st = coloc_transformer(scale_range=None)
        assert st.transform.name == "attention"
        assert st.output_size == (28, 28)
        assert st.head.weight.shape == (3, 8)
        _, params = st(torch.rand(2, 1, 84, 84), return_params=True)
        assert torch.allclose(params, torch.tensor([[1.0, 0.0, 0.0]]).expand(2, 3))  # identity: whole image

    def test_heatmap_localisation(self):
        import pytest

        from stnkit.models.localization import SoftArgmaxWindowHead

        st = coloc_transformer(scale_range=(0.25, 0.5), init_scale=1 / 3, localization="heatmap")
        assert isinstance(st.head, SoftArgmaxWindowHead)
        assert st.head.map_size == (21, 21)
        x = torch.zeros(1, 1, 84, 84)
        x[..., 28:56, 28:56] = torch.rand(28, 28)
        with torch.no_grad():
            out, params = st(x, return_params=True)
        assert torch.allclose(params, torch.tensor([[1 / 3, 0.0, 0.0]]), atol=1e-6)  # uniform map: centred
        assert torch.allclose(out[0, 0], x[0, 0, 28:56, 28:56], atol=1e-4)
        with pytest.raises(ValueError, match="unknown localization 'fc'"):
            coloc_transformer(localization="fc")
        with pytest.raises(ValueError, match="needs a scale_range"):
            coloc_transformer(scale_range=None, localization="heatmap")

    def test_init_scale(self):
        st = coloc_transformer(scale_range=(0.25, 0.5), init_scale=1 / 3)
        x = torch.zeros(1, 1, 84, 84)
        x[..., 28:56, 28:56] = torch.rand(28, 28)
        out, params = st(x, return_params=True)
        assert torch.allclose(params, torch.tensor([[1 / 3, 0.0, 0.0]]))
        assert torch.allclose(out[0, 0], x[0, 0, 28:56, 28:56], atol=1e-5)  # the centre 28x28, pixel for pixel


class TestCNNEmbedding:
    def test_three_layers_concatenated(self):
        cnn = CNN(28, channels=(4, 8))
        e = CNNEmbedding(cnn)
        x = torch.rand(2, 1, 28, 28)
        net = cnn.net
        h1 = net[2](net[1](net[0](x)))
        h2 = net[5](net[4](net[3](h1)))
        logits = cnn(x)
        expected = torch.cat([h1.flatten(1), h2.flatten(1), logits], dim=1)
        assert torch.allclose(CNNEmbedding(cnn, normalize=False)(x), expected)
        unit = [t / t.norm(dim=1, keepdim=True) for t in (h1.flatten(1), h2.flatten(1), logits)]
        assert torch.allclose(e(x), torch.cat(unit, dim=1), atol=1e-6)  # each layer at unit length
        assert e(x).shape == (2, 4 * 14 * 14 + 8 * 7 * 7 + 10)

    def test_frozen_but_differentiable_input(self):
        e = CNNEmbedding(CNN(28, channels=(4, 8)))
        wrapper = nn.Sequential(e)
        wrapper.train()
        assert not e.cnn.training  # stays in eval mode
        x = torch.rand(2, 1, 28, 28, requires_grad=True)
        e(x).square().sum().backward()
        assert x.grad is not None
        assert x.grad.abs().sum() > 0
        assert all(p.grad is None and not p.requires_grad for p in e.parameters())

    def test_errors(self):
        with pytest.raises(TypeError, match="CNN"):
            CNNEmbedding(nn.Linear(2, 2))
