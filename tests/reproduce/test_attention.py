"""Smoke budget of the attention-for-efficiency reproduction: error and timing side by side, resume."""

import json
from pathlib import Path

import pytest
import torch

from stnkit.reproduce import attention, run

EXP = attention.EXPERIMENT


@pytest.fixture
def smoke_env(monkeypatch, mnist_dir):
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and robust on a busy machine
    yield
    torch.set_num_threads(threads)


def test_cells():
    keys = [c.key for c in EXP.cells]
    assert keys == ["tc60-cnn", "tc60-st-crop30", "tc60-st-crop20", "tc120-cnn", "tc120-st-crop30",
                    "tc120-st-crop20"]
    big = next(c for c in EXP.cells if c.key == "tc120-st-crop20")
    assert big.fields["distortion"] == {"canvas_size": 120, "clutter": 24}
    assert big.fields["model_kwargs"] == {"channels": attention.CHANNELS, "crop": 20, "st_downsample": None,
                                          "localization": "heatmap"}


def test_cpu_budget_trains_attention_models_longer_but_not_the_cnns():
    cpu = EXP.budget("cpu-1.5k")
    by_key = {c.key: c for c in EXP.cells}
    assert cpu.fields_for(by_key["tc120-cnn"])["steps"] == 1500
    assert cpu.fields_for(by_key["tc120-st-crop20"])["steps"] == 6000
    assert EXP.budget("smoke").fields_for(by_key["tc60-st-crop30"])["steps"] == 4
    recipe = EXP.describe(Path("/nonexistent"), cpu)["recipe"]
    assert (recipe["st_steps"], recipe["steps"]) == (6000, 1500)


def test_time_model_counts_per_image():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    t = attention.time_model(model, torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long))
    assert t["train_ms"] > 0
    assert t["infer_ms"] > 0


def test_smoke_run_and_resume(tmp_path, smoke_env):
    out = tmp_path / "att"
    cells = ["tc60-cnn", "tc60-st-crop20"]
    table = run(EXP, out, budget="smoke", cells=cells, progress=False, log=lambda *_: None)
    assert [c["key"] for c in table["cells"]] == cells
    saved = json.loads((out / "attention.json").read_text())
    assert saved["budget"] == "smoke"
    timing = saved["timing"]["models"]
    assert set(timing) == {c.key for c in EXP.cells}  # every model timed in the same run
    # the attention models read a crop: fewer parameters than the full-resolution CNN of the same widths
    assert timing["tc120-st-crop20"]["params"] < timing["tc120-cnn"]["params"]
    for cell in saved["cells"]:
        assert 0.0 <= cell["error"] <= 100.0
        assert cell["canvas"] == 60
    assert saved["cells"][1]["crop"] == 20
    md = (out / "attention.md").read_text()
    assert "Budget **smoke**" in md
    assert "speed-up vs CNN" in md
    assert "60x60, crop 20: faster:" in md
    assert "training minutes" in md
    assert "120x120, crop 30: not all cells run yet" in md
    assert (out / "fig_attention_60.png").stat().st_size > 5_000
    from stnkit.training import load_checkpoint

    lit, _, _ = load_checkpoint(out / "cells" / "tc60-st-crop20" / "s0")
    assert lit.model.transformer.output_size == (20, 20)  # the crop itself, not halved as Table 1's TC models
    assert lit.model.classifier.input_shape == (1, 20, 20)

    lines = []
    run(EXP, out, budget="smoke", cells=cells, progress=False, figures=False, log=lines.append)
    assert sum(line.endswith("skipped") for line in lines) == 2
    assert not any("running" in line for line in lines)


def test_cpu_budget_states_its_localisation_lr_and_design():
    recipe = EXP.describe(Path("/nonexistent"), EXP.budget("cpu-1.5k"))["recipe"]
    assert (recipe["loc_lr_scale"], recipe["steps"], recipe["st_steps"], recipe["batch_size"]) == (1.0, 1500, 6000, 64)
    md = attention.render_markdown({"budget": "cpu-1.5k", "recipe": recipe, "channels": attention.CHANNELS,
                                    "cells": []})
    assert "localisation lr x1." in md
    assert "soft-argmax" in md
    assert "budget_recipe" not in md


def test_efficiency_check_states_the_training_compute_at_the_timed_costs():
    by_key = {"tc60-cnn": {"error": 4.0, "train_s": 120.0, "iterations": 1500, "batch_size": 64},
              "tc60-st-crop30": {"error": 3.5, "train_s": 300.0, "iterations": 6000, "batch_size": 64,
                                 "st_health": "alive"}}
    timing = {"tc60-cnn": {"train_ms": 2.0, "infer_ms": 1.0}, "tc60-st-crop30": {"train_ms": 1.0, "infer_ms": 0.5}}
    line = next(x for x in attention.efficiency_checks(by_key, timing) if x.startswith("60x60, crop 30"))
    assert "faster: yes (2.0x inference); at least as accurate: yes" in line
    assert "6.4 vs 3.2 min, 2.0x the CNN's training compute" in line  # 6000*64*1 ms vs 1500*64*2 ms
    assert "not attention" not in line
    by_key["tc60-st-crop30"]["st_health"] = "frozen from step 500"
    line = next(x for x in attention.efficiency_checks(by_key, timing) if x.startswith("60x60, crop 30"))
    assert "frozen from step 500: one fixed crop for every image, not attention" in line
