"""``stnkit reproduce``: every declared experiment, its flags mapped onto the runner, one-line errors."""

import json

import pytest
import torch

from stnkit.cli import build_parser, main
from stnkit.commands import reproduce as cmd
from stnkit.reproduce import EXPERIMENTS, CellStore


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class TestParser:
    def test_registered_with_every_experiment(self):
        args = build_parser().parse_args(["reproduce", "coloc"])
        assert args.experiment == "coloc"
        assert args.budget is None  # the experiment's default
        assert args.out is None
        assert set(EXPERIMENTS) == {"table1", "coloc", "attention", "addition", "mnist3d", "svhn",
                                    "registration"}
        assert {e.default_budget for e in EXPERIMENTS.values()} == {"cpu-3k", "cpu-1k", "cpu-1.5k", "cpu-60k",
                                                                    "cpu-2.5k", "cpu-600", "cpu-2k"}

    def test_unknown_experiment_is_one_line(self, capsys):
        assert main(["reproduce", "no-such-experiment"]) == 2
        err = capsys.readouterr().err
        assert "invalid choice" in err
        assert len(err.strip().splitlines()) == 1

    def test_bad_budget(self, capsys):
        assert main(["reproduce", "addition", "--budget", "huge"]) == 2

    @pytest.mark.parametrize("experiment", list(EXPERIMENTS))
    def test_flags_become_the_runners_arguments(self, tmp_path, experiment):
        argv = ["reproduce", experiment, "--budget", "smoke", "--cells", "a*", "b", "--seeds", "2", "--out",
                str(tmp_path / "o"), "--data-dir", "/data", "--threads", "1", "--no-figures", "--no-progress"]
        assert cmd.run_options(build_parser().parse_args(argv)) == {
            "out": str(tmp_path / "o"), "budget": "smoke", "cells": ["a*", "b"], "seeds": 2, "data_dir": "/data",
            "progress": False, "figures": False, "overrides": {"threads": 1}}

    def test_default_out(self):
        args = build_parser().parse_args(["reproduce", "mnist3d", "--no-progress"])
        assert cmd.run_options(args)["out"] == "results/mnist3d"
        assert cmd.run_options(args)["overrides"] is None


def test_rerun_says_what_it_skips_and_how_to_rerun(capsys, tmp_path):
    out = tmp_path / "m3d"
    out.mkdir()
    (out / "budget.json").write_text(json.dumps({"budget": "cpu"}))  # written under the old name
    store = CellStore(out)
    for key in ("cnn-mnist3d", "st-cnn-mnist3d"):
        store.save(key, {"key": key, "error": 9.5, "seeds": 1, "params": 10, "train_s": 60.0, "paper": None,
                         "version": "0", "commit": "abc"})
    assert main(["reproduce", "mnist3d", "--budget", "cpu", "--out", str(out), "--no-figures", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "budget 'cpu' of mnist3d is now called 'cpu-2.5k'; the old name will be removed"
    assert lines[1] == f"stnkit reproduce mnist3d: cpu-2.5k budget, output {out}"
    assert "[1/2] cnn-mnist3d: done (9.50 %), skipped" in lines
    assert any(line.startswith(f"2 cell(s) already done in {out} skipped: cnn-mnist3d, st-cnn-mnist3d; to run them "
                               "again, give another --out") for line in lines)
    assert lines[-1] == f"2 cells finished; tables in {out}/mnist3d.md and .json"
    assert "**9.50**" in (out / "mnist3d.md").read_text()


def test_user_errors_are_one_line(capsys, tmp_path):
    # a cell pattern that matches nothing: the experiment's ValueError, reported without a traceback
    assert main(["reproduce", "addition", "--budget", "smoke", "--cells", "resnet", "--out", str(tmp_path),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "matches no addition cell" in err
    assert "Traceback" not in err


def test_budget_the_experiment_lacks_is_refused_before_anything_is_written(capsys, tmp_path):
    assert main(["reproduce", "coloc", "--budget", "long", "--out", str(tmp_path / "c"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no 'long' budget" in err
    assert "smoke, cpu-1k, paper" in err
    assert not (tmp_path / "c").exists()
    assert EXPERIMENTS["table1"].budget("long", log=lambda _: None).name == "cpu-15k"
