"""End-to-end: the smoke budget trains real (tiny) cells through stnkit.training.fit and writes the table."""

import json

import pytest

from stnkit.reproduce import table1
from stnkit.reproduce.results import val_curve


@pytest.fixture
def smoke_env(monkeypatch, mnist_dir):
    monkeypatch.setenv("STNKIT_DATA", str(mnist_dir))


def test_smoke_table_resume(tmp_path, smoke_env, monkeypatch):
    out = tmp_path / "t1"
    cells = ["rts:cnn", "rts:st-cnn:affine"]
    table = table1.run(out, budget="smoke", cells=cells, progress=False, log=lambda *_: None)
    assert [(c["dataset"], c["model"], c["transform"]) for c in table["cells"]] == [
        ("rts", "cnn", None), ("rts", "st-cnn", "affine")]
    saved = json.loads((out / "table1.json").read_text())
    assert saved["budget"] == "smoke"
    for cell in saved["cells"]:
        assert set(cell) >= {"model", "transform", "dataset", "error", "seeds", "iterations", "wall_s", "params",
                             "version", "commit"}
        assert 0.0 <= cell["error"] <= 100.0
        assert cell["iterations"] == table1.BUDGETS["smoke"]["steps"]
        assert cell["params"] > 100_000
    md = (out / "table1.md").read_text()
    assert "Budget **smoke**" in md
    assert "Cells finished: 2 of 36" in md
    assert (out / "fig_rts.png").stat().st_size > 5_000
    assert (out / "curves_rts.png").stat().st_size > 5_000
    steps = table1.BUDGETS["smoke"]["steps"]
    curve = val_curve(out / "cells" / "rts-cnn" / "s0")
    assert [c["step"] for c in curve] == list(range(table1.BUDGETS["smoke"]["eval_every"], steps + 1,
                                                     table1.BUDGETS["smoke"]["eval_every"]))
    assert all(0.0 <= c["val_err"] <= 100.0 and c["train_s"] > 0 for c in curve)

    # an interrupted cell (checkpoint but no result) resumes from its checkpoint; finished cells are skipped
    cell_dir = out / "cells" / "rts-st-cnn-affine"
    (cell_dir / "result.json").unlink()
    (cell_dir / "s0" / "metrics.json").unlink()
    import stnkit.training as training

    calls = []
    real_fit = training.fit

    def spy(config, **kw):
        calls.append((config.model, config.resume))
        return real_fit(config, **kw)

    monkeypatch.setattr(training, "fit", spy)
    lines = []
    again = table1.run(out, budget="smoke", cells=cells, progress=False, figures=False, log=lines.append)
    assert calls == [("st-cnn", True)]
    assert any("rts-cnn: done" in line and "skipped" in line for line in lines)
    assert [c["error"] for c in again["cells"]] == [c["error"] for c in table["cells"]]
