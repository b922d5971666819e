import pytest
import torch

from stnkit.models import CNN, count_params, create
from stnkit.models.mnist3d import ProjectionClassifier, volume_localization, volume_localization_params


class TestVolumeLocalization:
    @pytest.mark.parametrize("size", [20, 32, 60])
    def test_shapes_and_count(self, size):
        net, f = volume_localization(size)
        assert net(torch.rand(2, 1, size, size, size)).shape == (2, f)
        assert count_params(net) == volume_localization_params(size)

    def test_errors(self):
        with pytest.raises(ValueError, match="at least"):
            volume_localization(10)


class TestProjectionModels:
    @pytest.mark.parametrize("name", ["st-cnn-mnist3d", "cnn-mnist3d"])
    def test_forward_backward(self, name):
        model = create(name, input_size=32, output_size=(16, 20, 20))
        x = torch.rand(2, 1, 32, 32, 32)
        model(x).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        assert model.project(x).shape == (2, 1, 20, 20)

    def test_st_is_the_baseline_at_initialisation(self):
        st = create("st-cnn-mnist3d", input_size=32, output_size=16, channels=(4, 8))
        base = ProjectionClassifier(st.classifier, 16)  # same classifier, no transformer
        x = torch.rand(2, 1, 32, 32, 32)
        assert torch.allclose(st.project(x), base.project(x), atol=1e-5)
        assert torch.allclose(st(x), base(x), atol=1e-5)

    def test_projection_sums_over_depth(self):
        model = ProjectionClassifier(CNN(8, channels=(2, 4)), (8, 8, 8))
        x = torch.zeros(1, 1, 8, 8, 8)
        x[0, 0, 3, 2, 5] = 1.0  # one voxel, at depth 3
        x[0, 0, 6, 2, 5] = 0.5
        proj = model.project(x)  # identity resampling at the same size: exact
        expected = torch.zeros(1, 1, 8, 8)
        expected[0, 0, 2, 5] = 1.5
        assert torch.allclose(proj, expected, atol=1e-6)

    def test_transformer_is_3d(self):
        model = create("st-cnn-mnist3d")
        assert model.transformer.transform.name == "affine3d"
        assert model.transformer.output_size == (28, 28, 28)
        assert model.classifier.input_shape == (1, 28, 28)

    def test_parameter_parity(self):
        a, b = count_params(create("st-cnn-mnist3d")), count_params(create("cnn-mnist3d"))
        assert abs(a - b) / b < 0.05

    def test_errors(self):
        with pytest.raises(ValueError, match="volumes of shape"):
            create("cnn-mnist3d", input_size=32)(torch.rand(2, 1, 32, 32))
        with pytest.raises(ValueError, match="cubic"):
            create("cnn-mnist3d", input_size=(32, 32, 16))
