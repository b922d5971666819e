"""End-to-end: the smoke budget trains real (tiny) cells through stnkit.training.fit and writes the table."""

import json

import pytest

from stnkit.reproduce import run, table1
from stnkit.reproduce.results import val_curve

SMOKE = table1.EXPERIMENT.budget("smoke").fields


@pytest.fixture
def smoke_env(monkeypatch, mnist_dir):
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))


def test_smoke_table_resume(tmp_path, smoke_env):
    out = tmp_path / "t1"
    cells = ["rts:cnn", "rts:st-cnn:affine"]
    table = run(table1.EXPERIMENT, out, budget="smoke", cells=cells, progress=False, log=lambda *_: None)
    assert [(c["dataset"], c["model"], c["transform"]) for c in table["cells"]] == [
        ("rts", "cnn", None), ("rts", "st-cnn", "affine")]
    saved = json.loads((out / "table1.json").read_text())
    assert saved["budget"] == "smoke"
    for cell in saved["cells"]:
        assert set(cell) >= {"model", "transform", "dataset", "error", "seeds", "iterations", "wall_s", "params",
                             "version", "commit"}
        assert 0.0 <= cell["error"] <= 100.0
        assert cell["iterations"] == SMOKE["steps"]
        assert cell["params"] > 100_000
    md = (out / "table1.md").read_text()
    assert "Budget **smoke**" in md
    assert "Cells finished: 2 of 36" in md
    assert (out / "fig_rts.png").stat().st_size > 5_000
    assert (out / "curves_rts.png").stat().st_size > 5_000
    steps = SMOKE["steps"]
    curve = val_curve(out / "cells" / "rts-cnn" / "s0")
    assert [c["step"] for c in curve] == list(range(SMOKE["eval_every"], steps + 1,
                                                     SMOKE["eval_every"]))
    assert all(0.0 <= c["val_err"] <= 100.0 and c["train_s"] > 0 for c in curve)

    # an interrupted cell (checkpoint but no result) resumes from its checkpoint; finished cells are skipped
    cell_dir = out / "cells" / "rts-st-cnn-affine"
    (cell_dir / "result.json").unlink()
    (cell_dir / "s0" / "metrics.json").unlink()
    lines = []
    again = run(table1.EXPERIMENT, out, budget="smoke", cells=cells, progress=False, figures=False, log=lines.append)
    assert "[1/2] rts-cnn: done" in lines[0]
    assert lines[0].endswith("skipped")
    assert "[2/2] rts-st-cnn-affine seed 0: running (smoke budget)" in lines
    assert (cell_dir / "s0" / "logs" / "metrics.0.csv").exists()  # resumed: the first part's log kept beside
    assert [c["error"] for c in again["cells"]] == [c["error"] for c in table["cells"]]
    assert "1 cell(s) already done" in lines[-1]
