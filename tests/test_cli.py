"""The stnkit command line: end to end on a tiny budget, and one-line errors for bad arguments."""

import json
import subprocess
import sys

import pytest
import torch

from stnkit.cli import build_parser, command_modules, main

TINY = ["--recipe", "smoke", "--train-subset", "128", "--val-subset", "32", "--test-subset", "32",
        "--param-budget", "20000", "--threads", "1", "--accelerator", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _one_line_error(capsys, argv, match):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    assert "stnkit train:" not in out  # the run's description is printed only once every value has been checked
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert match in lines[0], err
    return lines[0]


class TestParser:
    def test_commands_registered(self):
        names = {m.NAME for m in command_modules()}
        assert {"train", "evaluate", "visualize", "demo", "bench", "summary"} <= names

    def test_help(self, capsys):
        assert main(["--help"]) == 0
        assert "train" in capsys.readouterr().out

    def test_no_command(self, capsys):
        assert main([]) == 2

    def test_every_flag_has_help(self):
        commands = build_parser()._subparsers._group_actions[0].choices
        missing = [f"{name} {a.option_strings[0]}" for name, sub in commands.items() for a in sub._actions
                   if a.option_strings and a.dest != "help" and not a.help]
        assert missing == []

    def test_train_help_lists_choices(self):
        text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
        assert "st-cnn" in text
        assert "rts" in text
        assert "--budget" in text

    def test_every_recipe_setting_has_one_generated_flag(self):
        from stnkit.training.recipes import recipe_settings

        train = build_parser()._subparsers._group_actions[0].choices["train"]
        flags = {o: a.dest for a in train._actions for o in a.option_strings}
        for f in recipe_settings():
            assert flags["--" + f.name.replace("_", "-")] == f.name
        assert [o for o, dest in flags.items() if dest == "recipe"] == ["--recipe", "--budget"]


def _config(argv):
    from stnkit.commands.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


class TestRecipeFlags:
    def test_schedule_settings(self):
        r = _config(["--recipe", "paper", "--pct-start", "0.3", "--step-size", "7", "--gamma", "0.5"]).resolved_recipe()
        assert (r.pct_start, r.step_size, r.gamma, r.optimizer) == (0.3, 7, 0.5, "sgd")

    def test_flags_left_alone_keep_the_recipes_values(self):
        from stnkit.training import get_recipe

        config = _config(["--recipe", "demo", "--no-channels-last", "--precision", "32-true"])
        assert config.overrides == {"channels_last": False, "precision": "32-true"}
        assert config.resolved_recipe() == get_recipe("demo", channels_last=False, precision="32-true")

    def test_deprecated_spelling_works_with_a_notice(self, capsys):
        assert _config(["--budget", "smoke"]).recipe == "smoke"
        assert capsys.readouterr().err.splitlines() == ["stnkit train: --budget is deprecated; use --recipe"]
        assert _config(["--recipe", "smoke"]).recipe == "smoke"
        assert capsys.readouterr().err == ""


class TestBadArguments:
    @pytest.mark.parametrize(("argv", "match"), [
        (["train", "--dataset", "svhn"], "unknown dataset 'svhn'"),
        (["train", "--model", "resnet"], "unknown model 'resnet'"),
        (["train", "--transform", "swirl"], "unknown transform 'swirl'"),
        (["train", "--recipe", "turbo"], "unknown recipe 'turbo'"),
        (["train", "--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
        (["train", "--gamma", "-1"], "gamma must be positive; got -1.0"),
        (["train", "--pct-start", "1.5"], "pct_start must be in (0, 1); got 1.5"),
        (["train", "--lr", "0"], "lr must be positive; got 0.0"),
        (["train", "--lr"], "argument --lr: expected one argument"),
        (["train", "--steps", "ten"], "invalid int value: 'ten'"),
        (["train", "--steps", "2", "--epochs", "1"], "not allowed with argument"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["evaluate", "/nonexistent/run"], "no run directory or checkpoint at /nonexistent/run"),
        (["visualize", "/nonexistent/run", "--out", "/nonexistent/dir/fig.png"], "does not exist"),
        (["summary", "--dataset", "xyz"], "unknown dataset 'xyz'"),
        (["train", "--bound", "0"], "--bound must be positive"),
        (["train", "--model", "cnn", "--bound", "1"], "--bound applies to ST models"),
    ])
    def test_message(self, capsys, argv, match):
        _one_line_error(capsys, argv, match)

    def test_missing_data(self, capsys, tmp_path):
        line = _one_line_error(capsys, ["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"), *TINY],
                               "lacks MNIST files")
        assert "train-images-idx3-ubyte" in line

    def test_demo_missing_data_before_its_first_line(self, capsys, tmp_path):
        code = main(["demo", "--data-dir", str(tmp_path), "--out", str(tmp_path / "demo"), "--recipe", "smoke"])
        out, err = capsys.readouterr()
        assert code != 0
        assert "[1/2]" not in out
        assert len(err.strip().splitlines()) == 1
        assert "lacks MNIST files" in err

    def test_unwritable_output(self, capsys, tmp_path, mnist_dir):
        (tmp_path / "file").write_text("")
        _one_line_error(capsys, ["train", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "file" / "run"),
                                 *TINY], "cannot write the run directory")

    def test_resume_without_run(self, capsys, tmp_path):
        _one_line_error(capsys, ["train", "--resume", "--out", str(tmp_path / "none")], "nothing to resume")

    def test_bench_forwards(self, capsys):
        with pytest.raises(SystemExit) as exit_help:
            main(["bench", "--help"])
        assert exit_help.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: stnkit bench")
        assert "--quick" in out
        assert "--sections SECTIONS" in out
        with pytest.raises(SystemExit) as exit_unknown:
            main(["bench", "--steps", "3"])
        assert exit_unknown.value.code == 2
        assert "stnkit bench: error: unrecognized arguments: --steps 3" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_value:
            main(["bench", "--sections", "nope"])
        assert exit_value.value.code == "stnkit bench: unknown --sections nope; expected some of warps, training, data"
        for flag, value in (("--ops", "affine,twirl"), ("--passes", "fwd,sideways")):
            with pytest.raises(SystemExit) as exit_bad:
                main(["bench", flag, value])
            assert exit_bad.value.code.startswith(f"stnkit bench: unknown {flag} {value.split(',')[1]}; expected some "
                                                  "of ")

    def test_console_script_has_no_traceback(self):
        proc = subprocess.run([sys.executable, "-m", "stnkit", "train", "--dataset", "nope"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 1
        assert proc.stderr.strip().startswith("stnkit train: error: unknown dataset 'nope'; expected one of plain, "
                                              "r, rts, p, e, tc")
        assert len(proc.stderr.strip().splitlines()) == 1


class TestEndToEnd:
    def test_train_evaluate_visualize(self, capsys, tmp_path, mnist_dir):
        from matplotlib.image import imread

        run = tmp_path / "run"
        assert main(["train", "--dataset", "rts", "--model", "st-cnn", "--transform", "tps", "--data-dir",
                     str(mnist_dir), "--out", str(run), "--steps", "4", *TINY]) == 0
        out = capsys.readouterr().out
        assert "recipe smoke: adam" in out
        assert "test error" in out
        metrics = json.loads((run / "metrics.json").read_text())

        assert main(["evaluate", str(run), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["test_err"] == metrics["test_err"]
        assert main(["evaluate", str(run / "checkpoints" / "best.ckpt")]) == 0
        assert "test error" in capsys.readouterr().out

        fig = tmp_path / "fig.png"
        assert main(["visualize", str(run), "--out", str(fig), "-n", "8"]) == 0
        assert fig.stat().st_size > 20_000
        pixels = imread(fig)
        assert pixels.ndim == 3
        assert pixels.std() > 0.05

        gif = tmp_path / "fig.gif"
        assert main(["visualize", str(run), "--out", str(gif), "--gif", "-n", "4"]) == 0
        from PIL import Image

        with Image.open(gif) as im:
            assert im.n_frames == 2  # snapshots at step 0 and after the validation at step 4

    def test_resume(self, capsys, tmp_path, mnist_dir):
        run = str(tmp_path / "run")
        args = ["train", "--data-dir", str(mnist_dir), "--out", run, "--steps", "4", *TINY]
        assert main(args) == 0
        assert main(args) == 1  # refuses to overwrite
        assert "already holds a run" in capsys.readouterr().err
        assert main([*args, "--resume"]) == 0  # already complete: nothing left to do, same metrics
        capsys.readouterr()
        assert main([*args, "--resume", "--gamma", "0.5", "--pct-start", "0.25"]) == 1  # 0.25: smoke's own
        err = capsys.readouterr().err
        assert "conflict with it: --gamma 0.5 (the run's: 0.1); drop them" in err
        assert len(err.strip().splitlines()) == 1
        resumed = _config([*args[1:], "--resume", "--precision", "bf16-mixed", "--threads", "2"])  # how, not what
        assert (resumed.resolved_recipe().precision, resumed.threads, resumed.resume) == ("bf16-mixed", 2, True)
        assert main([*args, "--overwrite"]) == 0

    def test_demo(self, capsys, tmp_path, mnist_dir):
        out = tmp_path / "demo"
        assert main(["demo", "--data-dir", str(mnist_dir), "--out", str(out), "--recipe", "smoke", "--steps", "2",
                     "--train-subset", "64", "--val-subset", "16", "--test-subset", "16", "--threads", "1"]) == 0
        text = capsys.readouterr().out
        assert "ST-CNN (affine)" in text
        assert "CNN" in text
        assert "test error %" in text
        assert (out / "st-cnn-rts.png").stat().st_size > 20_000
        summary = json.loads((out / "demo.json").read_text())
        assert [r["model"] for r in summary["runs"]] == ["st-cnn", "cnn"]

    def test_summary(self, capsys):
        assert main(["summary", "--dataset", "rts"]) == 0
        out = capsys.readouterr().out
        assert "ST-CNN tps" in out
        assert "FCN" in out


def test_library_only_install_gets_one_line():
    """Without the [train] extra (simulated: lightning unimportable), training commands say what to install."""
    code = ("import sys; sys.modules['lightning'] = None; from stnkit.cli import main; "
            "sys.exit(main(['train', '--recipe', 'smoke']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "stnkit train: needs lightning, which the library alone does not install; pip install 'stnkit[train]'"]
