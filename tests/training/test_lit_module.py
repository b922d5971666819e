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
