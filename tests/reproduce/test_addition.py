"""Smoke budget of the MNIST-addition reproduction: real (tiny) cells through fit, well-formed outputs, resume."""

import json

import pytest
import torch

from stnkit.models import create
from stnkit.reproduce import addition, run
from stnkit.reproduce.experiment import budget_recipe

EXP = addition.EXPERIMENT


@pytest.fixture
def smoke_env(monkeypatch, mnist_dir):
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and robust on a busy machine
    yield
    torch.set_num_threads(threads)


def test_cells_and_paper():
    assert [c.key for c in EXP.cells] == [
        "fcn", "cnn", "st-fcn-affine", "st-fcn-projective", "st-fcn-tps", "st-fcn-x2-affine",
        "st-fcn-x2-projective", "st-fcn-x2-tps"]
    assert addition.PAPER["fcn"] == 47.7
    assert addition.PAPER["cnn"] == 14.7
    assert all(c.fields["dataset"] == "addition" for c in EXP.cells)


def test_attention_shares():
    model = create("st-fcn-x2", input_size=16, in_channels=2, num_classes=19, param_budget=50_000)
    x = torch.zeros(4, 2, 16, 16)
    x[:, 0, 2:6, 2:6] = 1.0  # digit 1 top-left, digit 2 bottom-right
    x[:, 1, 10:14, 10:14] = 1.0
    assert addition.attention_shares(model, x) == [0.5, 0.5]  # identity: both branches see both digits
    assert addition.branch_ink(model, x) == pytest.approx([1.0, 1.0], abs=0.15)
    with torch.no_grad():  # branch 1 zooms on the top-left quarter, branch 2 on the bottom-right one
        model.transformers.branches[0].head.bias.copy_(torch.tensor([0.5, 0, -0.5, 0, 0.5, -0.5]))
        model.transformers.branches[1].head.bias.copy_(torch.tensor([0.5, 0, 0.5, 0, 0.5, 0.5]))
    shares = addition.attention_shares(model, x)
    assert shares[0] < 0.05
    assert shares[1] > 0.95
    on_top = torch.zeros(2, 2, 16, 16)
    on_top[:, :, 2:6, 2:6] = 1.0  # both digits on the same spot: every crop holds both, so they are not counted
    assert addition.attention_shares(model, torch.cat([x, on_top])) == shares
    assert addition.attention_shares(model, on_top)[0] == 0.5  # nothing apart: all images count
    ink = addition.branch_ink(model, x)
    assert ink[0] > 1.5  # zoomed 2x onto one of the two digits: more ink per pixel than the input
    assert ink[1] > 1.5
    with torch.no_grad():  # branch 2's window leaves the image: blank outputs attend to neither digit
        model.transformers.branches[1].head.bias.copy_(torch.tensor([0.5, 0, 5.0, 0, 0.5, 5.0]))
    assert addition.branch_ink(model, x)[1] == 0.0
    assert addition.attention_shares(model, x) == [shares[0], None]


def test_smoke_run_and_resume(tmp_path, smoke_env):
    out = tmp_path / "add"
    cells = ["fcn", "st-fcn-x2-affine"]
    table = run(EXP, out, budget="smoke", cells=cells, progress=False, log=lambda *_: None)
    assert [c["key"] for c in table["cells"]] == cells
    saved = json.loads((out / "addition.json").read_text())
    assert saved["budget"] == "smoke"
    assert saved["param_budget"] == addition.PARAM_BUDGET
    for cell in saved["cells"]:
        assert set(cell) >= {"key", "model", "dataset", "error", "seeds", "iterations", "params", "paper", "commit"}
        assert 0.0 <= cell["error"] <= 100.0
        assert cell["iterations"] == EXP.budget("smoke").fields["steps"]
        assert abs(cell["params"] - addition.PARAM_BUDGET) / addition.PARAM_BUDGET < 0.05
    assert saved["attention_shares"]["cell"] == "st-fcn-x2-affine"
    assert len(saved["attention_shares"]["channel1_share"]) == 2
    md = (out / "addition.md").read_text()
    assert "Budget **smoke**" in md
    assert "| FCN | **" in md
    assert "47.7" in md
    assert "not run" in md
    assert "Cells finished: 2 of 8" in md
    assert (out / "fig_addition.png").stat().st_size > 5_000

    lines = []
    again = run(EXP, out, budget="smoke", cells=cells, progress=False, figures=False, log=lines.append)
    assert sum(line.endswith("skipped") for line in lines) == 2  # finished cells are skipped, not trained
    assert not any("running" in line for line in lines)
    assert [c["error"] for c in again["cells"]] == [c["error"] for c in table["cells"]]
    with pytest.raises(ValueError, match="holds results of the 'smoke' budget"):
        run(EXP, out, budget="cpu-60k", cells=cells, log=lambda *_: None)
    with pytest.raises(ValueError, match="matches no addition cell"):
        run(EXP, tmp_path / "x", budget="smoke", cells=["resnet"], log=lambda *_: None)


def test_cpu_budget_keeps_the_localisation_lr_at_x1():
    # the cpu recipe's x3 made both localisation nets of the 2xST-FCN diverge (blank outputs, error at chance)
    cpu = EXP.budget("cpu-60k")
    assert EXP.budget("cpu", log=lambda _: None) is cpu
    assert budget_recipe(cpu.fields)["loc_lr_scale"] == 1.0
    assert budget_recipe(cpu.fields)["steps"] == 60_000


def test_cpu_budget_trains_the_cnn_shorter(tmp_path):
    """The cnn's override replaces the budget's steps for that cell only, and the markdown says so."""
    cpu = EXP.budget("cpu-60k")
    by_key = {c.key: c for c in EXP.cells}
    assert cpu.fields_for(by_key["cnn"])["steps"] == 10_000
    assert cpu.fields_for(by_key["fcn"])["steps"] == 60_000
    assert cpu.cell_overrides("st-fcn-x2-tps") == {}
    table = addition.render_markdown({"budget": "cpu-60k", "recipe": budget_recipe(cpu.fields),
                                      "param_budget": addition.PARAM_BUDGET, "cell_fields": dict(cpu.overrides),
                                      "cells": []})
    assert "60000 iterations per cell (cnn 10,000)" in table
