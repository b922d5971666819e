import pytest

from stnkit.training import RECIPES, TrainConfig, get_recipe
from stnkit.training.config import cpu_has_native_bf16


class TestGetRecipe:
    def test_paper_recipe_is_the_papers(self):
        r = get_recipe("paper")
        assert (r.optimizer, r.lr, r.momentum, r.weight_decay) == ("sgd", 0.01, 0.0, 0.0)
        assert (r.scheduler, r.step_size, r.gamma, r.batch_size, r.steps) == ("step", 50_000, 0.1, 256, 150_000)
        assert r.st_downsample == "avgpool"

    def test_presets(self):
        assert {"paper", "cpu", "demo", "smoke"} <= set(RECIPES)
        assert all(r.note for r in RECIPES.values())

    def test_overrides(self):
        r = get_recipe("cpu", lr=0.5, steps=None)
        assert r.lr == 0.5
        assert r.steps == RECIPES["cpu"].steps

    @pytest.mark.parametrize(("kw", "match"), [
        ({"name": "fast"}, "unknown recipe 'fast'"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"scheduler": "plateau"}, "unknown scheduler"),
        ({"steps": 0}, "steps must be a positive"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"st_downsample": "maxpool"}, "st_downsample"),
        ({"colour": "red"}, "unknown recipe fields"),
    ])
    def test_errors(self, kw, match):
        name = kw.pop("name", "cpu")
        with pytest.raises(ValueError, match=match):
            get_recipe(name, **kw)


class TestTrainConfig:
    def test_downsampling_only_for_st_models_on_rts_and_tc(self):
        assert TrainConfig(dataset="rts", model="st-cnn", recipe="paper").st_downsample_for_model() == "avgpool"
        assert TrainConfig(dataset="tc", model="st-fcn", recipe="cpu").st_downsample_for_model() == "output_size"
        assert TrainConfig(dataset="r", model="st-cnn").st_downsample_for_model() == "none"
        assert TrainConfig(dataset="rts", model="cnn").st_downsample_for_model() == "none"

    def test_roundtrip(self):
        c = TrainConfig(dataset="p", model="st-fcn", transform="tps", lr=0.1, seed=3)
        d = c.to_dict()
        assert d["resolved"]["lr"] == 0.1
        assert TrainConfig.from_dict(d) == c

    def test_default_run_dir(self):
        run_dir = TrainConfig(dataset="rts", model="st-cnn", recipe="cpu").run_dir()
        assert str(run_dir) == "runs/rts-st-cnn-affine-cpu-s0"
        assert str(TrainConfig(dataset="e", model="cnn", recipe="paper", seed=2).run_dir()) == "runs/e-cnn-paper-s2"

    def test_precision_auto(self):
        native = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
        assert TrainConfig(recipe="cpu", accelerator="cpu").precision_used() == native
        assert TrainConfig(recipe="cpu", accelerator="cpu", precision="32-true").precision_used() == "32-true"
        assert TrainConfig(recipe="paper", accelerator="cpu").precision_used() == "32-true"
        assert TrainConfig(recipe="cpu", accelerator="cpu").to_dict()["resolved"]["precision_used"] == native

    def test_every_recipe_setting_is_an_override(self):
        from stnkit.training.recipes import recipe_settings

        for f in recipe_settings():
            if f.metadata["choices"]:
                value = f.metadata["choices"][-1]
            else:  # a value unlike the default that every check accepts
                value = not f.default if f.type == "bool" else type(f.default)(f.default / 2) or 0.5
            config = TrainConfig(recipe="paper", **{f.name: value})
            assert getattr(config.resolved_recipe(), f.name) == value, f.name
            assert config.to_dict()[f.name] == value  # top-level, as config.json has always had them
            assert TrainConfig.from_dict(config.to_dict()) == config

    def test_resume_fixes_every_setting_but_how_it_runs(self):
        from stnkit.training.recipes import recipe_settings

        fixed = set(TrainConfig.fixed_on_resume())
        assert {f.name for f in recipe_settings()} - fixed == {"steps", "precision"}
        assert {"dataset", "model", "transform", "recipe", "seed", "model_kwargs"} <= fixed
        assert not fixed & {"threads", "accelerator", "devices", "data_dir", "out", "progress"}

    def test_reads_config_json_of_earlier_versions(self):
        old = {"dataset": "rts", "model": "st-cnn", "transform": "affine", "recipe": "cpu", "steps": 3000,
               "epochs": None, "batch_size": None, "lr": None, "st_downsample": None, "precision": None,
               "seed": 0, "resolved": {"steps": 3000}, "params": 123}
        config = TrainConfig.from_dict(old)
        assert config.overrides == {"steps": 3000}
        assert config.resolved_recipe().steps == 3000

    @pytest.mark.parametrize(("kw", "match"), [
        ({"colour": "red"}, "unknown TrainConfig fields: colour"),
        ({"dataset": "svhn"}, "unknown dataset 'svhn'"),
        ({"steps": 3, "epochs": 1}, "either steps or epochs"),
        ({"epochs": 0}, "epochs must be"),
    ])
    def test_errors(self, kw, match):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kw)
