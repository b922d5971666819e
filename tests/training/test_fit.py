import csv
import json

import pytest
import torch
from lightning.pytorch import Callback

from stnkit.training import NonFiniteLossError, TrainConfig, evaluate, fit, load_checkpoint


def _weights(run_dir, which="last"):
    return torch.load(run_dir / "checkpoints" / f"{which}.ckpt", weights_only=True)["state_dict"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _Kill(Callback):
    """Simulate a killed run: die before training step ``at`` (after the checkpoint of step ``at``)."""

    class Killed(Exception):
        pass

    def __init__(self, at):
        self.at = at

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.at:
            raise self.Killed(f"killed at step {self.at}")


class TestFit:
    def test_run_directory(self, tiny_config, tmp_path):
        m = fit(tiny_config(steps=6, eval_every=4))
        run = tmp_path / "run"
        for name in ("config.json", "metrics.json", "logs/metrics.csv", "checkpoints/last.ckpt",
                     "checkpoints/best.ckpt", "checkpoints/history/step-0000000.ckpt",
                     "checkpoints/history/step-0000006.ckpt"):
            assert (run / name).is_file(), name
        assert json.loads((run / "metrics.json").read_text()) == m
        assert m["steps"] == 6
        assert 0 <= m["test_err"] <= 100
        assert m["params"] == json.loads((run / "config.json").read_text())["params"]
        config = json.loads((run / "config.json").read_text())
        assert config["resolved"]["optimizer"] == "adam"  # the recipe is stated in every run's config
        # the final step (6) is validated and checkpointed although eval_every is 4
        assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 6
        assert not list(run.rglob("*.tmp"))

    def test_loss_decreases(self, tiny_config, tmp_path):
        fit(tiny_config(dataset="plain", steps=30, eval_every=30, batch_size=32, lr=3e-3, train_subset=512))
        with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
            losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
        assert len(losses) == 3  # logged every 10 steps
        assert losses[-1] < losses[0] - 0.5

    @pytest.mark.parametrize(("threads", "channels_last"), [(1, False), (2, True)])
    def test_seeded_runs_bit_identical(self, tiny_config, tmp_path, threads, channels_last):
        torch.set_num_threads(threads)  # restored by the conftest fixture
        kw = {"steps": 5, "threads": threads, "channels_last": channels_last}
        a = fit(tiny_config(out=str(tmp_path / "a"), **kw))
        b = fit(tiny_config(out=str(tmp_path / "b"), **kw))
        _assert_same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
        assert (a["test_err"], a["test_loss"], a["val_err"]) == (b["test_err"], b["test_loss"], b["val_err"])
        c = fit(tiny_config(out=str(tmp_path / "c"), seed=1, **kw))
        assert c["test_loss"] != a["test_loss"]

    def test_resume_equals_uninterrupted(self, tiny_config, tmp_path):
        # 200 images / batch 16 = 13 batches per epoch: the kill at step 10 is mid-epoch, the resumed run crosses
        # into epoch 1 and ends at step 20
        kw = {"steps": 20, "eval_every": 5, "scheduler": "onecycle", "batch_size": 16}
        full = fit(tiny_config(out=str(tmp_path / "full"), **kw))
        with pytest.raises(_Kill.Killed):
            fit(tiny_config(out=str(tmp_path / "killed"), **kw), callbacks=[_Kill(at=10)])
        assert torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=True)["global_step"] == 10
        resumed = fit(tiny_config(out=str(tmp_path / "killed"), resume=True, **kw))
        _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "killed"))
        for key in ("test_err", "test_loss", "val_err", "steps"):
            assert resumed[key] == full[key], key
        from stnkit.reproduce.results import val_curve  # the validation curve survives the resume, whole

        assert (tmp_path / "killed/logs/metrics.0.csv").exists()
        assert [p["step"] for p in val_curve(tmp_path / "killed")] == [p["step"] for p in val_curve(tmp_path / "full")]
        assert [p["step"] for p in val_curve(tmp_path / "full")] == [5, 10, 15, 20]

    def test_non_finite_loss_stops(self, tiny_config, tmp_path):
        class Poison(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == 2:
                    with torch.no_grad():
                        pl_module.model.classifier.net[-1].bias.fill_(float("nan"))

        with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 2.*--lr"):
            fit(tiny_config(steps=6), callbacks=[Poison()])

    def test_bf16_mixed(self, tiny_config, tmp_path):
        m = fit(tiny_config(steps=3, precision="bf16-mixed"))
        assert m["precision"] == "bf16-mixed"
        assert evaluate(tmp_path / "run")["test_err"] == m["test_err"]  # evaluated in the run's precision

    def test_leaves_the_thread_count_alone(self, tiny_config):
        before = torch.get_num_threads()
        m = fit(tiny_config(steps=1, threads=before + 1))
        assert torch.get_num_threads() == before
        assert m["steps"] == 1

    def test_recipe_settings_reach_the_module(self, tiny_config, tmp_path):
        fit(tiny_config(steps=2, scheduler="step", step_size=3, gamma=0.5, pct_start=0.3, loc_lr_scale=0.5))
        lit, config, ckpt = load_checkpoint(tmp_path / "run")
        assert (lit.recipe.step_size, lit.recipe.gamma, lit.recipe.pct_start) == (3, 0.5, 0.3)
        assert lit.recipe == config.resolved_recipe()
        assert lit.model.transformer.loc_lr_scale == 0.5  # the recipe's multiplier is the model's
        assert ckpt["lr_schedulers"][0]["gamma"] == 0.5

    def test_epochs(self, tiny_config):
        assert fit(tiny_config(epochs=1, batch_size=50, eval_every=100))["steps"] == 4  # 200 images / 50

    def test_run_dir_errors(self, tiny_config, tmp_path):
        with pytest.raises(FileNotFoundError, match="nothing to resume"):
            fit(tiny_config(resume=True))
        fit(tiny_config(steps=2))
        with pytest.raises(FileExistsError, match="already holds a run"):
            fit(tiny_config(steps=2))
        (tmp_path / "file").write_text("")
        with pytest.raises(PermissionError, match="cannot write the run directory"):
            fit(tiny_config(steps=2, out=str(tmp_path / "file" / "run")))

    def test_missing_data(self, tiny_config, tmp_path):
        with pytest.raises(ValueError, match="lacks MNIST files"):
            fit(tiny_config(data_dir=str(tmp_path)))
        assert not (tmp_path / "run").exists()  # nothing written before the data is found


class TestEvaluate:
    def test_matches_fit(self, tiny_config, tmp_path):
        m = fit(tiny_config(steps=4))
        e = evaluate(tmp_path / "run")
        assert e["test_err"] == m["test_err"]
        assert e["steps"] == 4
        e_best = evaluate(tmp_path / "run" / "checkpoints" / "best.ckpt")
        assert e_best["dataset"] == "rts"

    def test_load_checkpoint(self, tiny_config, tmp_path):
        fit(tiny_config(steps=2, model="st-fcn", transform="tps"))
        lit, config, _ = load_checkpoint(tmp_path / "run")
        assert (config.model, config.transform) == ("st-fcn", "tps")
        assert not lit.training
        snapshot, _, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "history" / "step-0000000.ckpt")
        assert hasattr(snapshot.model, "transformer")

    def test_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="no run directory or checkpoint"):
            evaluate(tmp_path / "missing")
        with pytest.raises(FileNotFoundError, match="has no last checkpoint"):
            evaluate(tmp_path)
        bad = tmp_path / "bad.ckpt"
        torch.save({"state_dict": {}}, bad)
        with pytest.raises(ValueError, match="not a checkpoint written by stnkit"):
            evaluate(bad)
        (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="cannot read checkpoint"):
            evaluate(tmp_path / "junk.ckpt")


def test_config_roundtrip_through_checkpoint(tiny_config, tmp_path):
    config = tiny_config(steps=2, lr=0.002)
    fit(config)
    _, loaded, _ = load_checkpoint(tmp_path / "run")
    assert loaded.resolved_recipe() == config.resolved_recipe()
    assert isinstance(loaded, TrainConfig)


def test_checkpoint_with_hparams_of_earlier_versions_loads(tiny_config, tmp_path):
    """Runs written before the recipe was passed whole saved 19 loose hyper-parameters; they load and evaluate."""
    m = fit(tiny_config(steps=2, model="st-fcn", transform="tps"))
    for which in ("last", "best"):
        path = tmp_path / "run" / "checkpoints" / f"{which}.ckpt"
        ckpt = torch.load(path, weights_only=True)
        r = ckpt["hyper_parameters"]["recipe"]
        ckpt["hyper_parameters"] = {  # as STNLitModule.save_hyperparameters() wrote them then
            "model": "st-fcn", "transform": "tps", "input_size": 42, "in_channels": 1, "num_classes": 10,
            "st_downsample": "output_size", "param_budget": 20_000, "optimizer": r["optimizer"], "lr": r["lr"],
            "momentum": r["momentum"], "weight_decay": r["weight_decay"], "scheduler": r["scheduler"],
            "max_steps": r["steps"], "step_size": r["step_size"], "gamma": r["gamma"], "pct_start": r["pct_start"],
            "loc_lr_scale": r["loc_lr_scale"], "channels_last": r["channels_last"], "model_kwargs": None}
        torch.save(ckpt, path)
    lit, config, _ = load_checkpoint(tmp_path / "run")
    assert lit.recipe.steps == 2
    assert config.transform == "tps"
    assert evaluate(tmp_path / "run")["test_err"] == m["test_err"]


def test_run_records_the_data_folder_it_found(tiny_config, tmp_path, monkeypatch, mnist_dir):
    """A run found through $STNKIT_DATA records the folder, so evaluating it later needs no environment."""
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))
    m = fit(tiny_config(steps=1, data_dir=None))
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"]
    assert recorded == str(mnist_dir)
    monkeypatch.delenv("STNKIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # nothing to find, nothing to download
    assert evaluate(tmp_path / "run")["test_err"] == m["test_err"]
