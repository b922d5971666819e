"""``stnkit reproduce``: dispatch to each experiment's run(), arguments passed through, one-line errors."""

import pytest
import torch

from stnkit.cli import build_parser, main
from stnkit.commands import reproduce as cmd


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class TestParser:
    def test_registered_with_every_experiment(self):
        args = build_parser().parse_args(["reproduce", "coloc"])
        assert args.experiment == "coloc"
        assert args.budget == "cpu"
        assert args.out is None
        assert set(cmd.EXPERIMENTS) == {"table1", "coloc", "attention", "addition", "mnist3d"}

    def test_unknown_experiment_is_one_line(self, capsys):
        assert main(["reproduce", "svhn"]) == 2
        err = capsys.readouterr().err
        assert "invalid choice" in err
        assert len(err.strip().splitlines()) == 1

    def test_bad_budget(self, capsys):
        assert main(["reproduce", "addition", "--budget", "huge"]) == 2


@pytest.mark.parametrize("experiment", list(cmd.EXPERIMENTS))
def test_dispatches_to_the_experiment(monkeypatch, capsys, tmp_path, experiment):
    import importlib

    module = importlib.import_module(f"stnkit.reproduce.{experiment}")
    seen = {}

    def fake_run(out, **kw):
        seen.update(out=out, **kw)
        return {"cells": [{}, {}]}

    monkeypatch.setattr(module, "run", fake_run)
    argv = ["reproduce", experiment, "--budget", "smoke", "--cells", "a*", "b", "--seeds", "2", "--out",
            str(tmp_path / "o"), "--data-dir", "/data", "--threads", "1", "--no-figures", "--no-progress"]
    assert main(argv) == 0
    assert seen == {"out": str(tmp_path / "o"), "budget": "smoke", "cells": ["a*", "b"], "seeds": 2,
                    "data_dir": "/data", "progress": False, "figures": False, "overrides": {"threads": 1}}
    assert f"2 cells finished; tables in {tmp_path / 'o'}/{experiment}.md" in capsys.readouterr().out


def test_default_out(monkeypatch, capsys):
    from stnkit.reproduce import mnist3d

    seen = {}
    monkeypatch.setattr(mnist3d, "run", lambda out, **kw: seen.update(out=out) or {"cells": []})
    assert main(["reproduce", "mnist3d", "--no-progress"]) == 0
    assert seen["out"] == "results/mnist3d"


def test_user_errors_are_one_line(monkeypatch, capsys, tmp_path):
    # a cell pattern that matches nothing: the experiment's ValueError, reported without a traceback
    assert main(["reproduce", "addition", "--budget", "smoke", "--cells", "resnet", "--out", str(tmp_path),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "matches no addition cell" in err
    assert "Traceback" not in err


def test_budget_the_experiment_lacks_is_refused_before_training(monkeypatch, capsys, tmp_path):
    from stnkit.reproduce import coloc, table1

    monkeypatch.setattr(coloc, "run", lambda *a, **kw: pytest.fail("coloc.run must not be called"))
    assert main(["reproduce", "coloc", "--budget", "long", "--out", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no 'long' budget" in err
    assert "smoke, cpu, paper" in err
    assert table1.BUDGETS["long"]["recipe"] == "cpu"
