import pytest
import torch

from stnkit import transforms

EXPECTED = {"affine": 6, "attention": 3, "translation": 2, "similarity": 4, "projective": 8, "tps": 32,
            "affine3d": 12}


class TestGet:
    @pytest.mark.parametrize(("name", "num_params"), EXPECTED.items())
    def test_names(self, name, num_params):
        t = transforms.get(name)
        assert t.name == name
        assert t.num_params == num_params
        assert t.identity().shape == (num_params,)

    def test_available(self):
        assert set(transforms.available()) == set(EXPECTED)

    def test_passthrough_and_kwargs(self):
        t = transforms.Affine()
        assert transforms.get(t) is t
        assert transforms.get("tps", grid_size=5).num_params == 50
        assert isinstance(transforms.get(transforms.Projective), transforms.Projective)
        assert transforms.get("TPS").num_params == 32

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown transform 'rot'; known transforms: affine, attention"):
            transforms.get("rot")
        with pytest.raises(TypeError, match="transform must be a name"):
            transforms.get(3)
        with pytest.raises(ValueError, match="keyword arguments"):
            transforms.get(transforms.Affine(), grid_size=3)

    def test_transform_is_module_alias(self):
        t = transforms.Attention()
        p = torch.tensor([[0.5, 0.0, 0.0]])
        torch.testing.assert_close(t(p, (3, 3)), t.grid(p, (3, 3)))
