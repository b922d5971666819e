"""The hooks that let ``fit`` train the addition and 3-D datasets and pass model/distortion options through."""

import json

import pytest
import torch

from stnkit.data.datamodule import AdditionDataModule, DistortedMNISTDataModule, MNIST3DDataModule, build_datamodule
from stnkit.training import TrainConfig, evaluate, fit, load_checkpoint, make_datamodule


class TestBuildDatamodule:
    def test_names(self):
        assert type(build_datamodule("rts")) is DistortedMNISTDataModule
        add = build_datamodule("addition", batch_size=8)
        assert isinstance(add, AdditionDataModule)
        assert (add.image_size, add.in_channels, add.num_classes, add.config.kind) == (42, 2, 19, "rts")
        vol = build_datamodule("mnist3d")
        assert isinstance(vol, MNIST3DDataModule)
        assert (vol.image_size, vol.in_channels, vol.config.kind) == (60, 1, "plain")

    def test_config_distortion_reaches_the_data(self, mnist_dir):
        cfg = TrainConfig(dataset="tc", distortion={"canvas_size": 120, "clutter": 24}, data_dir=str(mnist_dir),
                          test_subset=4, val_size=8)
        dm = make_datamodule(cfg, batch_size=4)
        assert dm.image_size == 120
        dm.setup("test")
        assert dm.test_set.get_batch([0, 1])[0].shape == (2, 1, 120, 120)

    def test_unknown_dataset(self):
        with pytest.raises(ValueError, match="unknown dataset 'sum'"):
            TrainConfig(dataset="sum")


class TestFitExperimentDatasets:
    def test_addition_with_model_kwargs(self, mnist_dir, tmp_path):
        m = fit(TrainConfig(dataset="addition", model="fcn", model_kwargs={"hidden": [12, 10]}, recipe="smoke",
                            steps=3, eval_every=3, data_dir=str(mnist_dir), out=str(tmp_path / "run"),
                            train_subset=200, val_subset=32, test_subset=48, progress=False, accelerator="cpu"))
        assert m["dataset"] == "addition"
        lit, cfg, _ = load_checkpoint(tmp_path / "run")
        assert lit.model.input_shape == (2, 42, 42)
        assert lit.model.net[-1].out_features == 19
        assert lit.model.net[1].out_features == 12
        assert cfg.model_kwargs == {"hidden": [12, 10]}
        assert json.loads((tmp_path / "run" / "config.json").read_text())["model_kwargs"] == {"hidden": [12, 10]}
        again = evaluate(tmp_path / "run", test_subset=48)  # rebuilt from the run's config: 2-channel sums
        assert again["test_err"] == pytest.approx(m["test_err"])


def test_channels_last_is_ignored_for_volume_models():
    from stnkit.training import STNLitModule, get_recipe

    recipe = get_recipe("smoke", channels_last=True)
    lit = STNLitModule("st-cnn-mnist3d", recipe, {"input_size": 24, "output_size": 16})
    assert not lit.channels_last  # Conv3d weights have no channels-last layout
    assert lit(torch.rand(2, 1, 24, 24, 24)).shape == (2, 10)
    lit = STNLitModule("cnn-mnist3d", recipe, {"input_size": 24, "output_size": 16})
    assert lit(torch.rand(2, 1, 24, 24, 24)).shape == (2, 10)  # 2-D convs channels-last, the volume input as is
    assert STNLitModule("cnn", recipe, {"input_size": 28}).channels_last
