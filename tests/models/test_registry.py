import pytest
from torch import nn

from stnkit.models import _registry, create, list_models, register_model


class TestListModels:
    def test_paper_models(self):
        assert {"fcn", "cnn", "st-fcn", "st-cnn"} <= set(list_models())


class TestCreate:
    def test_unknown_name_lists_known(self):
        with pytest.raises(ValueError, match="unknown model 'resnet'.*st-cnn"):
            create("resnet")

    def test_case_insensitive(self):
        assert isinstance(create("ST-CNN", input_size=42), nn.Module)


class TestRegisterModel:
    def test_register_and_duplicate(self):
        @register_model("tiny-test-model")
        def tiny(**kw):
            return nn.Linear(2, 2)

        try:
            assert isinstance(create("tiny-test-model"), nn.Linear)
            with pytest.raises(ValueError, match="already registered"):
                register_model("tiny-test-model")(tiny)
        finally:
            _registry._MODELS.pop("tiny-test-model")
