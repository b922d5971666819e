import pytest
import torch

from stnkit import models
from stnkit.training import STNLitModule, get_recipe


def _opt_and_sched(lit):
    out = lit.configure_optimizers()
    return (out, None) if isinstance(out, torch.optim.Optimizer) else (out["optimizer"], out["lr_scheduler"])


def _lit(model="fcn", recipe="paper", **model_kwargs):
    return STNLitModule(model, get_recipe(recipe) if isinstance(recipe, str) else recipe,
                        {"input_size": 28, **model_kwargs})


class TestSTNLitModule:
    def test_hparams_saved_as_plain_data(self, tmp_path):
        lit = _lit("st-fcn", get_recipe("paper", lr=0.1), transform="tps")
        assert lit.hparams["recipe"]["lr"] == 0.1
        assert lit.hparams["model_kwargs"] == {"input_size": 28, "transform": "tps"}
        torch.save(dict(lit.hparams), tmp_path / "hp.pt")  # checkpoints are read with weights_only=True
        again = STNLitModule(**torch.load(tmp_path / "hp.pt", weights_only=True))
        assert again.recipe == lit.recipe
        assert again.model.transformer.transform.__class__ is lit.model.transformer.transform.__class__

    def test_recipe_by_name_or_dict(self):
        assert _lit(recipe=get_recipe("cpu")).recipe == _lit(recipe=get_recipe("cpu").to_dict()).recipe
        assert STNLitModule("fcn", "smoke", {"input_size": 28}).recipe == get_recipe("smoke")

    def test_baseline_refuses_a_transform(self):
        with pytest.raises(ValueError, match="model 'cnn' takes no argument 'transform'; it takes input_size"):
            _lit("cnn", transform="tps")

    def test_localization_lr_group(self):
        lit = _lit("st-cnn", get_recipe("paper", scheduler="none"), input_size=42, loc_lr_scale=0.1)
        opt, _ = _opt_and_sched(lit)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.001])
        loc = {id(p) for p in lit.model.transformer.localization_parameters()}
        assert {id(p) for p in opt.param_groups[1]["params"]} == loc

    @pytest.mark.parametrize(("optimizer", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                                    ("adamw", torch.optim.AdamW)])
    def test_optimizers(self, optimizer, cls):
        opt, _ = _opt_and_sched(_lit(recipe=get_recipe("paper", optimizer=optimizer, scheduler="none")))
        assert type(opt) is cls

    @pytest.mark.parametrize(("scheduler", "cls"), [
        ("step", torch.optim.lr_scheduler.StepLR), ("cosine", torch.optim.lr_scheduler.CosineAnnealingLR),
        ("onecycle", torch.optim.lr_scheduler.OneCycleLR)])
    def test_schedulers(self, scheduler, cls):
        _, sched = _opt_and_sched(_lit(recipe=get_recipe("paper", scheduler=scheduler, steps=100)))
        assert type(sched["scheduler"]) is cls
        assert sched["interval"] == "step"

    def test_paper_step_schedule(self):
        opt, sched = _opt_and_sched(_lit(recipe="paper"))
        s = sched["scheduler"]
        for _ in range(50_000):
            opt.step()
            s.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.001)

    def test_schedule_settings_reach_the_scheduler(self):
        _, sched = _opt_and_sched(_lit(recipe=get_recipe("paper", step_size=7, gamma=0.5)))
        assert (sched["scheduler"].step_size, sched["scheduler"].gamma) == (7, 0.5)
        opt, sched = _opt_and_sched(_lit(recipe=get_recipe("cpu", pct_start=0.4, steps=100)))
        lrs = []
        for _ in range(99):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched["scheduler"].step()
        assert max(range(99), key=lrs.__getitem__) == 39  # the one-cycle peak after 40 % of the 100 steps
        assert max(lrs) == pytest.approx(3e-3)

    def test_channels_last(self):
        lit = _lit("cnn", get_recipe("paper", channels_last=True))
        assert lit(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        assert lit.model.net[0].weight.is_contiguous(memory_format=torch.channels_last)

    @pytest.mark.parametrize(("args", "match"), [
        (("fcn", {"name": "x", "optimizer": "rmsprop"}), "unknown optimizer"),
        (("fcn", {"name": "x", "scheduler": "plateau"}), "unknown scheduler"),
        (("fcn", "turbo"), "unknown recipe 'turbo'"),
        (("vit", "paper"), "unknown model"),
    ])
    def test_errors(self, args, match):
        with pytest.raises(ValueError, match=match):
            STNLitModule(*args, {"input_size": 28})


class TestFromHparams:
    """Checkpoints written before the recipe was passed whole hold loose hyper-parameters; they still load."""

    OLD = {"model": "st-cnn", "transform": "tps", "input_size": 42, "in_channels": 1, "num_classes": 10,
           "st_downsample": "output_size", "param_budget": 20_000, "optimizer": "adam", "lr": 0.003,
           "momentum": 0.0, "weight_decay": 0.0, "scheduler": "onecycle", "max_steps": 15_000, "step_size": 50_000,
           "gamma": 0.1, "pct_start": 0.2, "loc_lr_scale": 3.0, "channels_last": True, "model_kwargs": None}

    def test_st_model(self):
        lit = STNLitModule.from_hparams(self.OLD)
        want = models.create("st-cnn", input_size=42, transform="tps", st_downsample="output_size",
                             param_budget=20_000, loc_lr_scale=3.0)
        assert {k: v.shape for k, v in lit.model.state_dict().items()} == \
            {k: v.shape for k, v in want.state_dict().items()}
        assert lit.model.transformer.loc_lr_scale == 3.0
        assert (lit.recipe.optimizer, lit.recipe.steps, lit.recipe.pct_start) == ("adam", 15_000, 0.2)
        assert lit.channels_last

    def test_baseline_and_no_downsampling(self):
        lit = STNLitModule.from_hparams({**self.OLD, "model": "cnn", "st_downsample": "none",
                                         "model_kwargs": {"channels": [8, 8]}})
        assert lit.hparams["model_kwargs"] == {"input_size": 42, "in_channels": 1, "num_classes": 10,
                                               "param_budget": 20_000, "channels": [8, 8]}

    def test_new_hparams_pass_through(self):
        lit = _lit("st-fcn")
        assert STNLitModule.from_hparams(lit.hparams).hparams == lit.hparams


class TestBlankTransformerWarning:
    @staticmethod
    def _validate(lit, x):
        import lightning.pytorch as pl
        from torch.utils.data import DataLoader, TensorDataset

        from stnkit.training.run import _quiet_lightning

        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False)
        data = DataLoader(TensorDataset(x, torch.zeros(x.shape[0], dtype=torch.long)), batch_size=x.shape[0])
        with _quiet_lightning():
            return trainer.validate(lit, data, verbose=False)[0]

    def test_a_window_moved_off_the_image_is_reported_and_warned_about(self):
        lit = _lit("st-fcn", param_budget=20_000)
        with torch.no_grad():
            lit.model.transformer.head.bias[2] = 10.0  # tx far outside [-1, 1]: every output pixel reads padding
        x = torch.rand(6, 1, 28, 28)
        with pytest.warns(UserWarning, match="all-zero image for 100 % of the validation images"):
            metrics = self._validate(lit, x)
        assert metrics["val/st_blank"] == pytest.approx(100.0)

    def test_identity_transformer_is_not_blank_and_blank_inputs_do_not_count(self):
        lit = _lit("st-fcn", param_budget=20_000)
        x = torch.rand(6, 1, 28, 28)
        x[:3] = 0  # empty inputs give empty outputs: not the transformer's fault
        metrics = self._validate(lit, x)
        assert metrics["val/st_blank"] == 0.0

    def test_a_localisation_net_with_dead_units_is_reported_and_warned_about(self):
        lit = _lit("st-fcn", param_budget=20_000)
        x = torch.rand(6, 1, 28, 28)
        assert self._validate(lit, x)["val/st_frozen"] == 0.0  # random init: features vary over the images
        last = [m for m in lit.model.transformer.localization.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(-1e3)  # every unit of the last hidden layer below zero: ReLU outputs 0 for any image
            lit.model.transformer.head.weight.normal_()  # even a trained head then gives one transform for all
        with pytest.warns(UserWarning, match="same transform for every validation image"):
            metrics = self._validate(lit, x)
        assert metrics["val/st_frozen"] == pytest.approx(100.0)
        params = lit.model.transformer(x, return_params=True)[1]
        assert torch.equal(params, params[:1].expand_as(params))  # what the metric stands for

    def test_baselines_log_nothing(self):
        metrics = self._validate(_lit("fcn", param_budget=20_000),
                                 torch.rand(4, 1, 28, 28))
        assert "val/st_blank" not in metrics
        assert "val/st_frozen" not in metrics
