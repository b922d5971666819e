"""The one runner on a toy experiment (no training): skip and resume, locks, per-cell overrides, budgets, notes."""

import json
import subprocess
import sys
import threading

import pytest

from stnkit.files import FolderLock
from stnkit.reproduce import Budget, Cell, Experiment, provenance, run, write_outputs
from stnkit.reproduce.experiment import budget_recipe, select
from stnkit.reproduce.runner import claim
from stnkit.training import get_recipe


def toy_seed(run):
    """A seed that 'trains' by writing its fields, and resumes by reading them back."""
    path = run.run_dir / "seed.json"
    if path.exists():
        return {**json.loads(path.read_text()), "resumed": True}
    run.run_dir.mkdir(parents=True, exist_ok=True)
    result = {"value": run.fields["steps"] * 10 + run.seed, "fields": run.fields}
    path.write_text(json.dumps(result))
    return result


def toy_summary(cell, seeds):
    return {"error": sum(s["value"] for s in seeds) / len(seeds), "fields": seeds[0]["fields"],
            "resumed": [s.get("resumed", False) for s in seeds]}


def render(table):
    return "# toy\n\n" + "".join(f"- {c['key']}: {c['error']}\n" for c in table["cells"])


CELLS = (Cell("a-1", "A1", {"lr": 1}, paper=1.0), Cell("a-2", "A2", {"lr": 2}), Cell("b-1", "B1", {"lr": 3}))
TOY = Experiment(
    name="toy", title="toy", cells=CELLS, default_budget="small", render=render, run_seed=toy_seed,
    summarize=toy_summary,
    budgets=(Budget("small", {"steps": 1, "lr": 0}, {"a-*": {"steps": 2}, "a-2": {"lr": 9}}, aliases=("old",)),
             Budget("big", {"steps": 5}, seeds=2)),
)


def quiet(*_):
    return None


def setup_experiment(calls):
    """TOY with a setup cell whose seed writes a checkpoint, as training does; ``calls`` gets each trained seed."""
    def train(run):
        calls.append(run.seed)
        (run.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run.run_dir / "checkpoints" / "last.ckpt").write_text("")
        return {"value": 5, "fields": run.fields}

    setup = Cell("enc", "encoder", {"lr": 7}, seeds=1, run_seed=train)
    return Experiment(name="toy", title="t", cells=CELLS, budgets=TOY.budgets, default_budget="small",
                      render=render, run_seed=toy_seed, summarize=toy_summary, setup=(setup,))


class TestRun:
    def test_runs_every_cell_with_the_budget_then_cell_then_override_fields(self, tmp_path):
        table = run(TOY, tmp_path, log=quiet)
        by_key = {c["key"]: c for c in table["cells"]}
        assert by_key["a-1"]["fields"] == {"steps": 2, "lr": 1}  # override > cell > budget
        assert by_key["a-2"]["fields"] == {"steps": 2, "lr": 9}  # later patterns win
        assert by_key["b-1"]["fields"] == {"steps": 1, "lr": 3}
        assert by_key["a-2"]["overrides"] == {"steps": 2, "lr": 9}  # recorded in the result
        assert "overrides" not in by_key["b-1"]
        assert by_key["a-1"]["error"] == 20
        assert by_key["a-1"]["paper"] == 1.0
        assert set(by_key["a-1"]) >= {"key", "label", "seeds", "budget", "version", "commit"}
        assert json.loads((tmp_path / "budget.json").read_text()) == {"budget": "small"}
        code = provenance()
        assert (tmp_path / "toy.md").read_text() == ("# toy\n\n- a-1: 20.0\n- a-2: 20.0\n- b-1: 10.0\n\n"
                                                     f"Code: stnkit {code['version']}, commit(s) {code['commit']} "
                                                     "(3 cells).\n")

    def test_run_overrides_win_and_are_recorded_except_threads(self, tmp_path):
        table = run(TOY, tmp_path, overrides={"lr": 7, "threads": 1}, log=quiet)
        by_key = {c["key"]: c for c in table["cells"]}
        assert by_key["a-2"]["fields"] == {"steps": 2, "lr": 7, "threads": 1}
        assert by_key["a-2"]["overrides"] == {"steps": 2, "lr": 7}
        assert by_key["b-1"]["overrides"] == {"lr": 7}
        threads_only = run(TOY, tmp_path / "threads", overrides={"threads": 1}, log=quiet)
        assert "overrides" not in {c["key"]: c for c in threads_only["cells"]}["b-1"]

    def test_rerun_names_the_skipped_cells_and_how_to_rerun(self, tmp_path):
        run(TOY, tmp_path, cells=["a-*"], log=quiet)
        lines = []
        run(TOY, tmp_path, log=lines.append)
        assert [line for line in lines if line.endswith("skipped")] == [
            "[1/3] a-1: done (20.00 % (paper 1.0 %)), skipped", "[2/3] a-2: done (20.00 %), skipped"]
        assert any("b-1 seed 0: running (small budget)" in line for line in lines)
        hint = lines[-1]
        assert hint.startswith(f"2 cell(s) already done in {tmp_path} skipped: a-1, a-2")
        assert "another --out" in hint

    def test_an_interrupted_cell_resumes_its_finished_seeds(self, tmp_path):
        run(TOY, tmp_path, budget="big", cells=["b-1"], log=quiet)
        (tmp_path / "cells" / "b-1" / "result.json").unlink()  # killed after its seeds, before its result
        table = run(TOY, tmp_path, budget="big", cells=["b-1"], log=quiet)
        assert table["cells"][0]["resumed"] == [True, True]
        assert table["cells"][0]["error"] == 50.5  # seeds 0 and 1 of the budget's 2

    def test_more_seeds_rerun_a_cell(self, tmp_path):
        run(TOY, tmp_path, cells=["b-1"], log=quiet)
        table = run(TOY, tmp_path, cells=["b-1"], seeds=2, log=quiet)
        assert table["cells"][0]["seeds"] == 2
        assert table["cells"][0]["resumed"] == [True, False]

    def test_a_cell_held_by_a_live_process_is_left_alone(self, tmp_path):
        held = FolderLock(tmp_path / "cells" / "a-1").acquire()  # flock: another open file conflicts, as a process
        lines = []
        table = run(TOY, tmp_path, cells=["a-1"], log=lines.append)
        held.release()
        assert "[1/1] a-1: being run by another process, skipped" in lines
        assert table["cells"] == []
        assert not any("already done" in line for line in lines)

    def test_setup_cells_run_first_whatever_the_selection(self, tmp_path):
        setup = Cell("enc", "encoder", {"lr": 7}, seeds=1)
        exp = Experiment(name="toy", title="t", cells=CELLS, budgets=TOY.budgets, default_budget="big",
                         render=render, run_seed=toy_seed, summarize=toy_summary, setup=(setup,))
        lines = []
        table = run(exp, tmp_path, cells=["b-1"], log=lines.append)
        assert lines[0] == "[1/2] enc seed 0: running (big budget)"  # once: its fixed seed count
        assert json.loads((tmp_path / "cells" / "enc" / "result.json").read_text())["seeds"] == 1
        assert [c["key"] for c in table["cells"]] == ["b-1"]  # not in the table

    def test_a_setup_cell_without_its_checkpoints_is_retrained_only_when_a_cell_needs_it(self, tmp_path):
        calls = []
        exp = setup_experiment(calls)
        run(exp, tmp_path, cells=["b-1"], log=quiet)
        assert calls == [0]
        (tmp_path / "cells" / "enc" / "s0" / "checkpoints" / "last.ckpt").unlink()  # a fresh clone: not committed
        lines = []
        run(exp, tmp_path, cells=["b-1"], log=lines.append)  # nothing pending: the result is enough
        assert calls == [0]
        assert lines[0].startswith("[1/2] enc: done (")
        lines.clear()
        run(exp, tmp_path, cells=["a-1"], log=lines.append)
        assert calls == [0, 0]
        assert lines[0] == ("[1/2] enc: done, but the cells to run need its checkpoints, which are never committed: "
                            "training it again")
        assert (tmp_path / "cells" / "enc" / "s0" / "checkpoints" / "last.ckpt").is_file()

    def test_a_setup_cell_run_by_another_process_is_waited_for(self, tmp_path):
        calls = []
        exp = setup_experiment(calls)
        other = FolderLock(tmp_path / "cells" / "enc").acquire()

        def finish():  # the other process: trains the setup cell, saves it, lets go
            run_dir = tmp_path / "cells" / "enc" / "s0"
            (run_dir / "checkpoints").mkdir(parents=True)
            (run_dir / "checkpoints" / "last.ckpt").write_text("")
            (tmp_path / "cells" / "enc" / "result.json").write_text(json.dumps({"seeds": 1, "error": 5}))
            other.release()

        timer = threading.Timer(0.3, finish)
        timer.start()
        lines = []
        table = run(exp, tmp_path, cells=["a-1"], log=lines.append)
        timer.join()
        assert lines[0] == "[1/2] enc: being run by another process; waiting for it (the other cells need it)"
        assert lines[1] == "[1/2] enc: done (5.00 %), skipped"
        assert calls == []  # not trained twice
        assert [c["key"] for c in table["cells"]] == ["a-1"]

    def test_a_cell_may_bring_its_own_seed_function(self, tmp_path):
        def evaluate_only(run):
            return {"value": -1, "fields": {}}

        exp = Experiment(name="toy", title="t", cells=(*CELLS[:1], Cell("peer", "peer", run_seed=evaluate_only)),
                         budgets=TOY.budgets, default_budget="small", render=render, run_seed=toy_seed,
                         summarize=toy_summary)
        assert [c["error"] for c in run(exp, tmp_path, log=quiet)["cells"]] == [20, -1]

    def test_errors(self, tmp_path):
        with pytest.raises(ValueError, match="reproduce toy has no 'huge' budget; choose one of small, big"):
            run(TOY, tmp_path, budget="huge", log=quiet)
        with pytest.raises(ValueError, match="matches no toy cell; cells: a-1, a-2, b-1"):
            run(TOY, tmp_path, cells=["c*"], log=quiet)
        with pytest.raises(ValueError, match="seeds must be >= 1; got -1"):
            run(TOY, tmp_path, seeds=-1, log=quiet)
        run(TOY, tmp_path, cells=["b-1"], log=quiet)
        with pytest.raises(ValueError, match="holds results of the 'small' budget; use another --out for 'big'"):
            run(TOY, tmp_path, budget="big", log=quiet)


class TestBudget:
    def test_an_old_name_works_with_one_notice(self, tmp_path):
        lines = []
        run(TOY, tmp_path, budget="old", cells=["b-1"], log=lines.append)
        assert lines[0] == "budget 'old' of toy is now called 'small'; the old name will be removed"
        assert sum("old" in line for line in lines) == 1

    def test_a_folder_of_the_old_name_is_the_same_budget(self, tmp_path):
        (tmp_path / "budget.json").write_text(json.dumps({"budget": "old"}))
        assert run(TOY, tmp_path, cells=["b-1"], log=quiet)["budget"] == "small"

    def test_cell_overrides_follow_the_patterns_in_order(self):
        small = TOY.budget("small")
        assert small.cell_overrides("a-2") == {"steps": 2, "lr": 9}
        assert small.cell_overrides("b-1") == {}
        assert small.fields_for(CELLS[2]) == {"steps": 1, "lr": 3}

    def test_budget_recipe_applies_the_recipe_fields_and_drops_the_others(self):
        r = budget_recipe({"recipe": "cpu", "steps": 7, "batch_size": 16, "loc_lr_scale": 1.0, "train_subset": 5})
        base = get_recipe("cpu")
        assert (r["steps"], r["batch_size"], r["loc_lr_scale"]) == (7, 16, 1.0)
        assert (r["lr"], r["optimizer"], r["name"]) == (base.lr, base.optimizer, "cpu")
        assert "train_subset" not in r

    def test_budget_recipe_rejects_an_unknown_recipe(self):
        with pytest.raises(ValueError, match="unknown recipe"):
            budget_recipe({"recipe": "fast"})


def test_notes_are_included_verbatim(tmp_path):
    run(TOY, tmp_path, cells=["b-1"], log=quiet)
    notes = "## Notes\n\nA finding, with `code` and 1.23 %.\n"
    (tmp_path / "NOTES.md").write_text(notes)
    write_outputs(TOY, tmp_path, TOY.budget("small"))
    code = provenance()
    assert (tmp_path / "toy.md").read_text() == ("# toy\n\n- b-1: 10.0\n\n"
                                                 f"Code: stnkit {code['version']}, commit(s) {code['commit']} "
                                                 "(1 cell).\n\n" + notes)


def test_select_keeps_order_and_drops_repeats():
    assert [c.key for c in select(CELLS, ["b-*", "a-1", "b-1"], "toy")] == ["b-1", "a-1"]
    assert select(CELLS, None, "toy") == list(CELLS)


def test_claim_keeps_a_cell_to_one_process_and_a_killed_holder_lets_go(tmp_path):
    lock = claim(tmp_path / "cell")
    assert lock is not None
    assert claim(tmp_path / "cell") is None  # held
    lock.release()
    again = claim(tmp_path / "cell")
    assert again is not None
    again.release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from stnkit.reproduce.runner import claim; "
                               f"lock = claim({str(tmp_path / 'cell')!r}); print(lock is not None, flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    assert claim(tmp_path / "cell") is None  # a live process holds it
    holder.kill()
    holder.wait()
    holder.stdout.close()
    taken = claim(tmp_path / "cell")  # the kernel dropped the killed holder's lock
    assert taken is not None
    taken.release()
