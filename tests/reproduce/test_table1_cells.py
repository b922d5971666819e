import json

import pytest

from stnkit.reproduce import run, table1, write_outputs
from stnkit.reproduce.experiment import budget_recipe
from stnkit.reproduce.results import CellStore, atomic_write_text

EXP = table1.EXPERIMENT


class TestCells:
    def test_36_cells(self):
        cells = EXP.cells
        assert len(cells) == 36
        assert len({c.key for c in cells}) == 36
        tc = [c for c in cells if c.fields["dataset"] == "tc"]
        assert [(c.fields["model"], c.fields.get("transform")) for c in tc] == [
            ("fcn", None), ("cnn", None), ("st-fcn", "affine"), ("st-cnn", "affine")]
        assert all(c.paper is not None for c in cells)
        assert tc[3].key == "tc-st-cnn-affine"

    @pytest.mark.parametrize(("spec", "n"), [(["rts"], 8), (["*:st-cnn"], 13), (["rts:st-cnn:affine"], 1),
                                             (["tc:cnn", "rts:cnn", "tc:cnn"], 2), (["*:cnn:none"], 5)])
    def test_select(self, spec, n):
        assert len(table1.select_cells(spec)) == n

    def test_select_errors(self):
        with pytest.raises(ValueError, match="matches no Table 1 cell"):
            table1.select_cells(["rts:st-cnn:similarity"])
        with pytest.raises(ValueError, match="dataset\\[:model\\[:transform\\]\\]"):
            table1.select_cells(["a:b:c:d"])


def fake_result(cell, error):
    return {"key": cell.key, "model": cell.fields["model"], "transform": cell.fields.get("transform"),
            "dataset": cell.fields["dataset"], "error": error, "errors": [error], "seeds": 1, "iterations": 10,
            "wall_s": 1.0, "params": 100, "budget": "smoke", "recipe": "smoke", "paper": cell.paper, "version": "0",
            "commit": "abc"}


class TestOutputs:
    def test_markdown_and_ordering(self, tmp_path):
        store = CellStore(tmp_path)
        rts = {c.fields["model"] + str(c.fields.get("transform")): c for c in table1.select_cells(["rts"])}
        store.save(rts["cnnNone"].key, fake_result(rts["cnnNone"], 1.0))
        store.save(rts["st-cnnaffine"].key, fake_result(rts["st-cnnaffine"], 0.6))
        store.save(rts["st-cnnprojective"].key, fake_result(rts["st-cnnprojective"], 1.2))
        table = write_outputs(EXP, tmp_path, EXP.budget("smoke"), figures=False)
        assert len(table["cells"]) == 3
        saved = json.loads((tmp_path / "table1.json").read_text())
        assert saved["budget"] == "smoke"
        assert {c["error"] for c in saved["cells"]} == {1.0, 0.6, 1.2}
        md = (tmp_path / "table1.md").read_text()
        assert "**0.60** / 0.5 (+0.10)" in md
        assert "not run / 5.2" in md  # FCN RTS
        assert "RTS: every ST-CNN beats CNN (1.00): does NOT hold (Aff 0.60, Proj 1.20; incomplete)" in md
        assert "Cells finished: 3 of 36" in md

    def test_budget_mismatch_refused(self, tmp_path):
        atomic_write_text(tmp_path / "budget.json", json.dumps({"budget": "cpu"}))
        with pytest.raises(ValueError, match="holds results of the 'cpu' budget"):
            run(EXP, tmp_path, budget="smoke", cells=["rts:cnn"])

    def test_corrupt_result_named(self, tmp_path):
        store = CellStore(tmp_path)
        atomic_write_text(store.cell_dir("rts-cnn") / "result.json", "{not json")
        with pytest.raises(ValueError, match="corrupt result file .*rts-cnn.*delete it"):
            store.load("rts-cnn")


def test_val_curve_reads_the_lightning_csv_and_keeps_the_last_row_of_a_repeated_step(tmp_path):
    from stnkit.reproduce.results import val_curve

    assert val_curve(tmp_path) == []
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text(
        "epoch,step,time/train_s,train/loss,val/err\n"
        "0,99,,0.5,\n"
        "0,99,10.0,,7.5\n"
        "1,199,20.0,,5.0\n"
        "1,199,21.0,,4.0\n"  # resumed run repeating the validation of step 200
    )
    assert val_curve(tmp_path) == [{"step": 100, "train_s": 10.0, "val_err": 7.5},
                                   {"step": 200, "train_s": 21.0, "val_err": 4.0}]


def test_val_curve_joins_the_parts_of_a_resumed_run(tmp_path):
    from stnkit.reproduce.results import val_curve

    (tmp_path / "logs").mkdir()
    header = "epoch,step,time/train_s,val/err\n"
    # part 0 ran to step 300 but was killed before its next checkpoint; part 1 resumed from step 200
    (tmp_path / "logs" / "metrics.0.csv").write_text(header + "0,99,10.0,9.0\n0,199,20.0,8.0\n0,299,30.0,7.0\n")
    (tmp_path / "logs" / "metrics.1.csv").write_text(header + "1,200,,\n1,299,31.0,6.5\n1,399,41.0,6.0\n")
    (tmp_path / "logs" / "metrics.csv").write_text(header + "2,400,,\n2,499,50.0,5.0\n")
    assert [(p["step"], p["val_err"]) for p in val_curve(tmp_path)] == [(100, 9.0), (200, 8.0), (300, 6.5),
                                                                          (400, 6.0), (500, 5.0)]


@pytest.mark.parametrize(("rows", "expected"), [
    ("0,999,0.0,0.0,5.0\n0,1999,0.0,0.0,4.0\n", "alive"),
    ("0,999,0.0,0.0,5.0\n0,1999,100.0,0.0,4.0\n0,2999,100.0,0.0,3.5\n", "frozen from step 2,000"),
    ("0,999,100.0,0.0,5.0\n0,1999,0.0,0.0,4.0\n", "alive"),  # recovered: only the end counts
    ("0,999,0.0,100.0,88.0\n0,1999,0.0,100.0,88.0\n", "blank from step 1,000"),
    ("0,999,0.0,40.0,9.0\n", "alive"),  # a minority of blank outputs is not a failure
    ("0,999,,,5.0\n", None),  # a run without the metrics (no transformer, or an older run)
])
def test_st_health_reads_the_end_of_each_seeds_validation_log(tmp_path, rows, expected):
    from stnkit.reproduce.results import st_health

    (tmp_path / "s0" / "logs").mkdir(parents=True)
    (tmp_path / "s0" / "logs" / "metrics.csv").write_text("epoch,step,val/st_frozen,val/st_blank,val/err\n" + rows)
    assert st_health(tmp_path) == expected


def test_st_health_names_the_seeds_when_they_differ(tmp_path):
    from stnkit.reproduce.results import st_health

    header = "epoch,step,val/st_frozen,val/err\n"
    for seed, frozen in (("s0", "0.0"), ("s1", "100.0")):
        (tmp_path / seed / "logs").mkdir(parents=True)
        (tmp_path / seed / "logs" / "metrics.csv").write_text(header + f"0,499,{frozen},5.0\n")
    assert st_health(tmp_path) == "s0: alive; s1: frozen from step 500"


def test_long_budget_trains_the_localisation_net_at_x1_under_its_new_name():
    lines = []
    long = EXP.budget("long", log=lines.append)
    assert long.name == "cpu-15k"
    assert lines == ["budget 'long' of table1 is now called 'cpu-15k'; the old name will be removed"]
    recipe = budget_recipe(long.fields)
    assert (recipe["loc_lr_scale"], recipe["steps"]) == (1.0, 15_000)  # the whole cpu recipe, localisation x1
    assert budget_recipe(EXP.budget("cpu-3k").fields)["loc_lr_scale"] == 3.0
    md = table1.render_markdown({"budget": "cpu-15k", "recipe": recipe, "cells": []})
    assert "Budget **cpu-15k**" in md
    assert "localisation lr x1.0," in md


def test_cpu_budget_trains_tc_transformers_at_localisation_lr_x1_and_says_so(tmp_path):
    cpu = EXP.budget("cpu-3k")
    assert EXP.budget("cpu", log=lambda _: None) is cpu  # the old name of the 3,000-step budget
    by_key = {c.key: c for c in EXP.cells}
    assert cpu.fields_for(by_key["tc-st-cnn-affine"])["loc_lr_scale"] == 1.0
    assert "loc_lr_scale" not in cpu.fields_for(by_key["rts-st-cnn-affine"])  # the recipe's x3
    assert cpu.cell_overrides("tc-cnn") == {"loc_lr_scale": 1.0}
    table = write_outputs(EXP, tmp_path, cpu, figures=False)
    assert table["overrides"] == {"tc-*": {"loc_lr_scale": 1.0}}
    assert "localisation lr x3.0 (TC: x1)" in (tmp_path / "table1.md").read_text()


def test_committed_notes_say_why_tc_uses_x1():
    from pathlib import Path

    notes = Path(__file__).resolve().parents[2] / "results" / "table1" / "NOTES.md"
    assert "TC's cells use the localisation lr x1" in notes.read_text()
