import pytest
import torch

from stnkit.training import STNLitModule


def _opt_and_sched(lit):
    out = lit.configure_optimizers()
    return (out, None) if isinstance(out, torch.optim.Optimizer) else (out["optimizer"], out["lr_scheduler"])


class TestSTNLitModule:
    def test_hparams_saved(self):
        lit = STNLitModule(model="st-fcn", transform="tps", input_size=28, lr=0.1)
        assert lit.hparams.transform == "tps"
        assert lit.hparams.lr == 0.1

    def test_baseline_ignores_transform(self):
        lit = STNLitModule(model="cnn", transform="tps", input_size=28)
        assert not hasattr(lit.model, "transformer")

    def test_localization_lr_group(self):
        lit = STNLitModule(model="st-cnn", input_size=42, optimizer="sgd", lr=0.01, loc_lr_scale=0.1,
                           scheduler="none")
        opt, _ = _opt_and_sched(lit)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.001])
        loc = {id(p) for p in lit.model.transformer.localization_parameters()}
        assert {id(p) for p in opt.param_groups[1]["params"]} == loc

    @pytest.mark.parametrize(("optimizer", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                                    ("adamw", torch.optim.AdamW)])
    def test_optimizers(self, optimizer, cls):
        opt, _ = _opt_and_sched(STNLitModule(model="fcn", input_size=28, optimizer=optimizer, scheduler="none"))
        assert type(opt) is cls

    @pytest.mark.parametrize(("scheduler", "cls"), [
        ("step", torch.optim.lr_scheduler.StepLR), ("cosine", torch.optim.lr_scheduler.CosineAnnealingLR),
        ("onecycle", torch.optim.lr_scheduler.OneCycleLR)])
    def test_schedulers(self, scheduler, cls):
        _, sched = _opt_and_sched(STNLitModule(model="fcn", input_size=28, scheduler=scheduler, max_steps=100))
        assert type(sched["scheduler"]) is cls
        assert sched["interval"] == "step"

    def test_paper_step_schedule(self):
        lit = STNLitModule(model="fcn", input_size=28, scheduler="step", step_size=50_000, gamma=0.1)
        opt, sched = _opt_and_sched(lit)
        s = sched["scheduler"]
        for _ in range(50_000):
            opt.step()
            s.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.001)

    def test_channels_last(self):
        lit = STNLitModule(model="cnn", input_size=28, channels_last=True)
        assert lit(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        assert lit.model.net[0].weight.is_contiguous(memory_format=torch.channels_last)

    @pytest.mark.parametrize(("kw", "match"), [({"optimizer": "rmsprop"}, "unknown optimizer"),
                                               ({"scheduler": "plateau"}, "unknown scheduler"),
                                               ({"model": "vit"}, "unknown model")])
    def test_errors(self, kw, match):
        with pytest.raises(ValueError, match=match):
            STNLitModule(input_size=28, **kw)


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
        lit = STNLitModule(model="st-fcn", input_size=28, param_budget=20_000)
        with torch.no_grad():
            lit.model.transformer.head.bias[2] = 10.0  # tx far outside [-1, 1]: every output pixel reads padding
        x = torch.rand(6, 1, 28, 28)
        with pytest.warns(UserWarning, match="all-zero image for 100 % of the validation images"):
            metrics = self._validate(lit, x)
        assert metrics["val/st_blank"] == pytest.approx(100.0)

    def test_identity_transformer_is_not_blank_and_blank_inputs_do_not_count(self):
        lit = STNLitModule(model="st-fcn", input_size=28, param_budget=20_000)
        x = torch.rand(6, 1, 28, 28)
        x[:3] = 0  # empty inputs give empty outputs: not the transformer's fault
        metrics = self._validate(lit, x)
        assert metrics["val/st_blank"] == 0.0

    def test_a_localisation_net_with_dead_units_is_reported_and_warned_about(self):
        lit = STNLitModule(model="st-fcn", input_size=28, param_budget=20_000)
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
        metrics = self._validate(STNLitModule(model="fcn", input_size=28, param_budget=20_000),
                                 torch.rand(4, 1, 28, 28))
        assert "val/st_blank" not in metrics
        assert "val/st_frozen" not in metrics
