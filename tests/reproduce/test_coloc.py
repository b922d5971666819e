"""Smoke budget of the co-localisation reproduction: encoder through fit, per-class sets, outputs, resume."""

import json

import pytest
import torch

from stnkit.reproduce import coloc, run

EXP = coloc.EXPERIMENT


@pytest.fixture
def smoke_env(monkeypatch, mnist_dir):
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and robust on a busy machine
    yield
    torch.set_num_threads(threads)


def test_cells():
    keys = [c.key for c in EXP.cells]
    assert keys[:2] == ["t-0", "t-1"]
    assert len(keys) == 40
    assert keys[20:22] == ["t-0-heatmap", "t-1-heatmap"]
    assert {c.fields["localization"] for c in EXP.cells} == {"paper", "heatmap"}
    assert [c.key for c in EXP.setup] == ["encoder"]
    smoke = EXP.budget("smoke")
    assert smoke.fields_for(EXP.setup[0])["recipe"] == "smoke"  # the encoder's fields, not the sets'
    assert "lr" not in smoke.fields_for(EXP.setup[0])
    assert smoke.fields_for(EXP.cells[0])["n"] == 8


def test_smoke_run_and_resume(tmp_path, smoke_env):
    out = tmp_path / "coloc"
    table = run(EXP, out, budget="smoke", cells=["t-3", "tc-3", "t-3-heatmap"], progress=False,
                      log=lambda *_: None)
    assert [c["key"] for c in table["cells"]] == ["t-3", "tc-3", "t-3-heatmap"]
    assert [c["localization"] for c in table["cells"]] == ["paper", "paper", "heatmap"]
    saved = json.loads((out / "coloc.json").read_text())
    assert saved["budget"] == "smoke"
    n = EXP.budget("smoke").fields_for(EXP.cells[0])["n"]
    for cell in saved["cells"]:
        assert 0.0 <= cell["correct"] <= 100.0
        assert len(cell["ious"]) == n
        assert [h["step"] for h in cell["history"]] == [0, 1, 2, 3]  # eval_every 1 over 3 steps
        assert len(cell["history"][0]["params"]) == min(n, coloc.HISTORY_IMAGES)
        assert cell["paper"] == list(coloc.PAPER[cell["kind"]])
        # the reported correctness is the share of the per-image IoUs above 0.5
        assert cell["correct"] == pytest.approx(100 * sum(i > 0.5 for i in cell["ious"]) / n)
    md = (out / "coloc.md").read_text()
    assert "Budget **smoke**" in md
    assert "| 3 | **" in md
    assert "75-93" in md
    assert "Cells finished: 3 of 40" in md
    assert "| T ours, heatmap % |" in md
    assert all(0 <= c["centre_hit"] <= 100 for c in saved["cells"])
    assert (out / "fig_coloc.png").stat().st_size > 5_000
    assert (out / "fig_coloc_heatmap.png").stat().st_size > 5_000
    assert (out / "cells" / "encoder" / "s0" / "metrics.json").exists()

    lines = []
    run(EXP, out, budget="smoke", cells=["t-3", "tc-3", "t-3-heatmap"], progress=False, figures=False,
        log=lines.append)
    assert sum(line.endswith("skipped") for line in lines) == 4  # the encoder and the three sets
    assert not any("running" in line for line in lines)


def test_boxes_figure_draws_history():
    from stnkit.viz import panel_figure

    res = {"history": [{"step": 0, "params": [[1 / 3, 0.0, 0.0]]}, {"step": 5, "params": [[1 / 3, 0.5, 0.5]]}],
           "true_boxes": [[49.0, 49.0, 77.0, 77.0]]}
    grid = coloc.box_panels([("T digit 1", torch.rand(1, 1, 84, 84), res)])
    assert len(grid[0][0].outlines) == 3  # two history boxes and the true frame
    assert grid[0][0].outlines[-1][0][0].tolist() == [48.5, 48.5]  # the true frame's corner, in pixels
    ax = panel_figure(grid).axes[0]
    assert len(ax.lines) == 3
