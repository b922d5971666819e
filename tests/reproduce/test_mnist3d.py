"""Smoke budget of the 3-D MNIST reproduction: both cells through fit, well-formed outputs, the figure."""

import json

import pytest
import torch

from stnkit.reproduce import mnist3d, run
from stnkit.reproduce.experiment import budget_recipe

EXP = mnist3d.EXPERIMENT


@pytest.fixture
def smoke_env(monkeypatch, mnist_dir):
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and robust on a busy machine
    yield
    torch.set_num_threads(threads)


def test_smoke_run_and_resume(tmp_path, smoke_env):
    out = tmp_path / "m3d"
    table = run(EXP, out, budget="smoke", progress=False, log=lambda *_: None)
    assert [c["key"] for c in table["cells"]] == ["cnn-mnist3d", "st-cnn-mnist3d"]
    saved = json.loads((out / "mnist3d.json").read_text())
    assert saved["budget"] == "smoke"
    assert saved["recipe"]["batch_size"] == 8
    for cell in saved["cells"]:
        assert cell["dataset"] == "mnist3d"
        assert 0.0 <= cell["error"] <= 100.0
    md = (out / "mnist3d.md").read_text()
    assert "Budget **smoke**" in md
    assert "Does the 3-D transformer beat the fixed projection?" in md
    assert (out / "fig_mnist3d.png").stat().st_size > 5_000

    lines = []
    run(EXP, out, budget="smoke", progress=False, figures=False, log=lines.append)
    assert sum(line.endswith("skipped") for line in lines) == 2
    assert not any("running" in line for line in lines)


def test_cpu_budget_trains_the_localisation_net_at_x1_and_says_so():
    recipe = budget_recipe(EXP.budget("cpu-2.5k").fields)
    assert (recipe["loc_lr_scale"], recipe["steps"], recipe["channels_last"]) == (1.0, 2500, False)
    md = mnist3d.render_markdown({"budget": "cpu-2.5k", "recipe": recipe, "cells": []})
    assert "2500 iterations per cell, localisation lr x1." in md
