"""Smoke tests of scripts/analysis/: each script on tiny runs made here through the public API, output checked."""

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stnkit.losses import attended_box
from stnkit.reproduce import coloc, run, table1

REPO = Path(__file__).resolve().parents[2]
ANALYSIS = REPO / "scripts" / "analysis"
SCRIPTS = sorted(p.stem for p in ANALYSIS.glob("*.py") if p.stem != "common")


def script(name: str):
    """The analysis script ``name`` as a module, its folder first on sys.path (as when it runs as a script)."""
    if str(ANALYSIS) not in sys.path:
        sys.path.insert(0, str(ANALYSIS))
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", ANALYSIS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(path: Path) -> list[list[str]]:
    """The body rows of the first markdown table in ``path``, as stripped cells."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


@pytest.fixture(scope="module")
def threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def coloc_cells(tmp_path_factory, mnist_dir, threads) -> Path:
    out = tmp_path_factory.mktemp("coloc")
    run(coloc.EXPERIMENT, out, budget="smoke", cells=["t-3", "tc-3-heatmap"], data_dir=str(mnist_dir),
        progress=False, figures=False, log=lambda *_: None)
    return out / "cells"


@pytest.fixture(scope="module")
def table1_cells(tmp_path_factory, mnist_dir, threads) -> Path:
    out = tmp_path_factory.mktemp("table1")
    run(table1.EXPERIMENT, out, budget="smoke", cells=["rts:cnn", "rts:st-cnn:affine"], data_dir=str(mnist_dir),
        progress=False, figures=False, log=lambda *_: None)
    return out / "cells"


def seed_result(cells: Path, name: str) -> dict:
    return json.loads((cells / name / "s0" / "result.json").read_text())


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        script(name).main(["--help"])
    assert e.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_scripts_found():
    assert len(SCRIPTS) == 8
    assert not list((REPO / "results").rglob("*.py"))


def test_missing_folder_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        script("coloc_loss_at_true_boxes").main(["--cells", str(tmp_path / "nowhere")])
    assert e.value.code == 2
    assert "expected an existing folder" in capsys.readouterr().err


def test_uncommitted_encoder_is_named():
    with pytest.raises(SystemExit, match="no encoder checkpoint .* not committed"):
        script("coloc_search_windows").main(["t-5", "--cells", str(REPO / "results" / "coloc" / "cells")])


def test_box_params_inverts_attended_box():
    common = script("common")
    boxes = torch.tensor([[28.0, 0.0, 56.0, 28.0], [10.0, 40.0, 42.0, 72.0], [0.0, 0.0, 84.0, 84.0]])
    torch.testing.assert_close(attended_box("attention", common.box_params(boxes), (84, 84)), boxes, atol=1e-4,
                               rtol=0)


def test_coloc_loss_at_true_boxes(coloc_cells, mnist_dir, tmp_path):
    out = tmp_path / "loss.md"
    script("coloc_loss_at_true_boxes").main(["--cells", str(coloc_cells), "--data", str(mnist_dir),
                                             "--draws", "2", "--out", str(out)])
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["t-3", "tc-3-heatmap"]
    for r in rows:
        assert float(r[1]) == round(seed_result(coloc_cells, r[0])["correct"])
        assert all(float(v) >= 0 for v in r[2:5])
        assert re.fullmatch(r"[+-]\d+\.\d, [+-]\d+\.\d", r[5])


def test_coloc_free_windows_appends(coloc_cells, mnist_dir, tmp_path):
    out = tmp_path / "free.md"
    args = ["t-3", "--budget", "smoke", "--cells", str(coloc_cells), "--data", str(mnist_dir), "--out", str(out)]
    mod = script("coloc_free_windows")
    mod.main(args)
    mod.main([*args, "--blur", "2"])
    rows = table_rows(out)
    steps = coloc.EXPERIMENT.budget("smoke").fields_for(coloc.EXPERIMENT.cells[0])["steps"]
    assert [(r[0], r[1], int(r[2])) for r in rows] == [("t-3", "0", steps), ("t-3", "2", steps)]
    assert all(0 <= float(r[4]) <= 100 and 0 <= float(r[5]) <= 1 for r in rows)


def test_coloc_search_windows(coloc_cells, mnist_dir, tmp_path):
    out = tmp_path / "search.md"
    script("coloc_search_windows").main(["t-3", "--cells", str(coloc_cells), "--data", str(mnist_dir), "--sweeps",
                                         "1", "--grid-px", "14", "--draws", "2", "--out", str(out)])
    (row,) = table_rows(out)
    assert row[0] == "t-3"
    assert float(row[1]) == round(seed_result(coloc_cells, "t-3")["correct"])
    assert 0 <= float(row[2]) <= 100
    assert float(row[3]) >= 0
    assert float(row[4]) >= 0


def test_coloc_heatmap_failures(coloc_cells, mnist_dir, tmp_path):
    script("coloc_heatmap_failures").main(["tc-3-heatmap", "--cells", str(coloc_cells), "--data", str(mnist_dir),
                                           "--seeds", "1", "--steps", "2", "--draws", "2", "--out", str(tmp_path)])
    rows = table_rows(tmp_path / "heatmap_failures_tc-3-heatmap.md")
    assert [r[0] for r in rows] == ["true 28x28 frames", "committed cell (seed 0)", "restart, seed 1"]
    assert float(rows[1][1]) == round(seed_result(coloc_cells, "tc-3-heatmap")["correct"])
    assert all(float(r[2]) >= 0 for r in rows)


def test_table1_check_alive(table1_cells, mnist_dir, tmp_path):
    out = tmp_path / "alive.md"
    script("table1_check_alive").main(["--cells", str(table1_cells), str(table1_cells), "--data", str(mnist_dir),
                                       "--images", "40", "--out", str(out)])
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["rts-st-cnn-affine", f"rts-st-cnn-affine (`{table1_cells.parent.name}/cells`)"]
    assert rows[0][1:] == rows[1][1:]
    assert len(rows[0]) == 7
    dead, units = re.fullmatch(r"(\d+) of (\d+)", rows[0][2]).groups()
    assert 0 <= int(dead) <= int(units)
    assert float(rows[0][3]) >= 0
    assert 0 < float(rows[0][4]) < 2
    shift_x, shift_y = re.fullmatch(r"(\d+\.\d\d) / (\d+\.\d\d)", rows[0][5]).groups()
    assert float(shift_x) >= 0
    assert float(shift_y) >= 0
    assert 0 <= float(rows[0][6]) <= 100
    assert "error % (40 images)" in out.read_text()


def test_localization_state_of_a_known_warp():
    from common import localization_state

    from stnkit.modules import SpatialTransformer

    torch.manual_seed(0)
    st = SpatialTransformer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.ReLU()),
                            "affine", in_features=5)
    with torch.no_grad():
        st.head.bias.copy_(torch.tensor([0.3, 0.0, 0.25, 0.0, -0.3, -0.5]))  # a flipped window of side 0.3
    model = torch.nn.Sequential(st, torch.nn.Flatten(), torch.nn.Linear(64, 3))
    images, labels = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
    state = localization_state(model, images, labels)
    assert state["scale"] == pytest.approx(0.3, abs=1e-6)
    assert state["shift_std_x"] == 0
    assert state["shift_std_y"] == 0
    assert state["param_std"] == 0
    assert state["units"] == 5
    dead = int((st.localization(images).amax(0) <= 0).sum())
    assert state["dead"] == dead
    expected = (model(images).argmax(1) != labels).float().mean().item() * 100
    assert state["error"] == pytest.approx(expected)


def test_table1_long_diagnose(table1_cells, mnist_dir, tmp_path):
    st = table1_cells / "rts-st-cnn-affine"
    script("table1_long_loc_lr_x3_diagnose").main(["--run", str(st), "--compare", str(st),
                                                   str(table1_cells / "rts-cnn"), "--data", str(mnist_dir),
                                                   "--images", "40", "--out", str(tmp_path)])
    rows = table_rows(tmp_path / "diagnosis.md")
    smoke = table1.EXPERIMENT.budget("smoke").fields
    assert [int(r[0]) for r in rows] == list(range(0, smoke["steps"] + 1, smoke["eval_every"]))
    assert rows[0][3] == "0.0000"  # the regression layer starts at zero weights: the same theta for every image
    assert (tmp_path / "curves.png").stat().st_size > 5_000


def test_recipes_sweep_then_summarize(mnist_dir, tmp_path, threads):
    sets = ["steps=2", "eval_every=1", "train_subset=128", "val_subset=32", "test_subset=32", "val_size=32",
            "batch_size=16"]
    script("recipes_sweep").main(["adam3e-3-onecycle-b128-loc3", "--threads", "1", "--data", str(mnist_dir),
                                  *[a for s in sets for a in ("--set", s)], "--work", str(tmp_path / "work"),
                                  "--out", str(tmp_path)])
    result = json.loads((tmp_path / "adam3e-3-onecycle-b128-loc3.json").read_text())
    assert result["model"] == "st-cnn"
    assert result["recipe"]["steps"] == 2
    assert result["recipe"]["loc_lr_scale"] == 3.0
    assert [c["step"] for c in result["curve"]] == [1, 2]
    assert 0 <= result["metrics"]["test_err"] <= 100
    script("recipes_summarize").main(["--runs", str(tmp_path), "--out", str(tmp_path)])
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], int(r["step"]), int(r["samples"])) for r in rows] == [
        ("adam3e-3-onecycle-b128-loc3", 1, 16), ("adam3e-3-onecycle-b128-loc3", 2, 32)]
    assert (tmp_path / "curves.png").stat().st_size > 5_000


def test_recipes_summarize_from_the_repository_reproduces_the_committed_csv(tmp_path):
    r = subprocess.run([sys.executable, "scripts/analysis/recipes_summarize.py", "--out", str(tmp_path)], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "summary.csv").read_text() == (REPO / "results" / "recipes" / "summary.csv").read_text()
    assert len(r.stdout.splitlines()) == len(list((REPO / "results" / "recipes").glob("*.json")))
