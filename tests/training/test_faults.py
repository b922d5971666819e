"""Training under faults and hostile input: kills, signals, full disks, concurrent runs, broken checkpoints, bad counts.

Each test reproduces a probe of issue 17 that failed before the change (a lost or lying run, or a traceback).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from stnkit.cli import main
from stnkit.files import FolderLock, FolderLockedError, atomic_torch_save, atomic_write_bytes
from stnkit.training import evaluate, fit
from stnkit.training.callbacks import AtomicCheckpointIO, SaveOnSignal
from stnkit.training.errors import RunInterrupted

REPO = Path(__file__).resolve().parents[2]
TINY = ["--recipe", "smoke", "--train-subset", "128", "--val-subset", "32", "--test-subset", "32",
        "--param-budget", "20000", "--threads", "1", "--accelerator", "cpu", "--no-progress"]


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _one_line(capsys, argv: list[str], match: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert match in lines[0], err
    return lines[0]


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120, **kw)


class TestAtomicWrites:
    def test_full_disk_keeps_the_previous_file(self, tmp_path):
        """A write that runs out of space (RLIMIT_FSIZE: EFBIG, as ENOSPC would) leaves the old file whole."""
        target = tmp_path / "last.ckpt"
        atomic_torch_save({"step": 1, "w": torch.zeros(10)}, target)
        out = _python(f"""
            import resource, signal, torch
            from stnkit.files import atomic_torch_save
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
            try:
                atomic_torch_save({{"step": 2, "w": torch.zeros(100_000)}}, {str(target)!r})
            except OSError as e:
                print("refused", e.errno)
            """)
        assert out.stdout.startswith("refused"), out.stderr
        assert torch.load(target, weights_only=True)["step"] == 1
        assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left

    def test_kill_during_write_keeps_the_previous_file(self, tmp_path):
        target = tmp_path / "big.bin"
        atomic_write_bytes(target, b"old")
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from stnkit.files import atomic_write_bytes
            print("ready", flush=True)
            while True:
                atomic_write_bytes({str(target)!r}, bytes(64 << 20))
            """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        with proc:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.3)
            proc.kill()
        data = target.read_bytes()
        assert data in (b"old", bytes(64 << 20))  # one whole version, never a mixture or a truncated file

    def test_fit_writes_through_the_atomic_writer(self, tiny_config, tmp_path):
        seen = []

        class Probe(Callback):
            def on_train_start(self, trainer, pl_module):
                seen.append(type(trainer.strategy.checkpoint_io))

        fit(tiny_config(steps=1), callbacks=[Probe()])
        assert seen == [AtomicCheckpointIO]
        assert not list((tmp_path / "run").rglob("*.tmp"))


class _SignalAt(Callback):
    """Send ``signum`` to this process while training step ``at`` runs."""

    def __init__(self, at: int, signum: int = signal.SIGTERM) -> None:
        self.at, self.signum = at, signum

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


class TestSignals:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_checkpoint_at_the_signal_resumes_exactly(self, tiny_config, tmp_path, signum):
        kw = {"steps": 12, "eval_every": 5, "batch_size": 16}
        full = fit(tiny_config(out=str(tmp_path / "full"), **kw))
        with pytest.raises(RunInterrupted, match=f"interrupted by {signal.Signals(signum).name} at step 8") as err:
            fit(tiny_config(out=str(tmp_path / "cut"), **kw), callbacks=[_SignalAt(7, signum)])
        assert err.value.exit_status == 128 + signum
        ckpt = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 8  # saved at the signal, not at the last validation (step 5)
        assert not (tmp_path / "cut/metrics.json").exists()  # an interrupted run does not claim a result
        assert not isinstance(getattr(signal.getsignal(signum), "__self__", None), SaveOnSignal)  # restored
        resumed = fit(tiny_config(out=str(tmp_path / "cut"), resume=True, **kw))
        a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert (resumed["test_loss"], resumed["steps"]) == (full["test_loss"], full["steps"])

    def test_cli_sigterm_exit_status_and_concurrent_run_refused(self, tmp_path, mnist_dir):
        run = tmp_path / "run"
        args = [sys.executable, "-m", "stnkit.cli", "train", "--data-dir", str(mnist_dir), "--out", str(run),
                "--steps", "100000", "--eval-every", "2", *TINY]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"),
               "PYTHONWARNINGS": "ignore::UserWarning:stnkit.data.datamodule"}  # the MNIST-like data's notice
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        with proc:
            while "step 2/" not in (line := proc.stdout.readline()):
                assert line, proc.stderr.read()
            second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
            assert second.returncode == 1
            assert second.stderr.strip().splitlines() == [
                f"stnkit train: error: run directory {run} is in use by another stnkit process (pid {proc.pid}); "
                f"wait for it to finish or choose another folder"]
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        last = err.strip().splitlines()[-1]  # after the run's own warnings, if any
        assert "Traceback" not in err
        assert last.startswith("stnkit train: interrupted by SIGTERM at step "), err
        assert last.endswith(f"checkpoints/last.ckpt; resume with: stnkit train --out {run} --resume")
        assert json.loads((run / "config.json").read_text())["steps"] == 100000  # the first run's files only
        assert not (run / "metrics.json").exists()


class TestRunDirectory:
    def test_locked_directory_refused_at_once(self, tiny_config, tmp_path):
        with FolderLock(tmp_path / "run"), pytest.raises(FolderLockedError, match=f"pid {os.getpid()}"):
            fit(tiny_config(steps=2))
        assert not (tmp_path / "run" / "config.json").exists()

    def test_foreign_folder_refused_unless_overwrite(self, tiny_config, tmp_path):
        mine = tmp_path / "run"
        mine.mkdir()
        (mine / "config.json").write_text('{"learning_rate": 3}')
        (mine / "notes.txt").write_text("my notes")
        with pytest.raises(FileExistsError, match="not empty and not a stnkit run .*config.json, notes.txt"):
            fit(tiny_config(steps=2))
        assert (mine / "config.json").read_text() == '{"learning_rate": 3}'
        fit(tiny_config(steps=2), overwrite=True)
        assert (mine / "notes.txt").read_text() == "my notes"

    def test_resume_refuses_conflicting_flags(self, capsys, tmp_path, mnist_dir):
        run = str(tmp_path / "run")
        base = ["train", "--data-dir", str(mnist_dir), "--out", run, "--steps", "2", *TINY]
        assert main(base) == 0
        capsys.readouterr()
        line = _one_line(capsys, [*base, "--resume", "--lr", "0.5", "--model", "cnn"], "conflict")
        assert "--model cnn (the run's: st-cnn)" in line
        assert "--lr 0.5 (the run's: 0.003)" in line  # the smoke recipe's learning rate
        assert main([*base, "--resume", "--threads", "1", "--model", "ST-CNN", "--lr", "0.003"]) == 0  # same values


class TestBrokenCheckpoints:
    @pytest.fixture
    def run(self, tmp_path, mnist_dir) -> Path:
        run = tmp_path / "trained"
        argv = ["train", "--data-dir", str(mnist_dir), "--out", str(run), "--steps", "2", *TINY]
        assert main(argv) == 0
        return run

    class _Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    def _variants(self, run: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
        good = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        data = (run / "checkpoints" / "last.ckpt").read_bytes()
        files = {"empty": b"", "truncated": data[: len(data) // 2], "crafted": pickle.dumps(self._Evil())}
        out = {}
        for name, content in files.items():
            (tmp / f"{name}.ckpt").write_bytes(content)
        unknown = {**good, "hyper_parameters": {**good["hyper_parameters"], "warp_speed": 9}}
        torch.save(unknown, tmp / "unknown.ckpt")
        key = next(k for k, v in good["state_dict"].items() if v.ndim == 4)
        shape = {**good, "state_dict": {**good["state_dict"], key: torch.zeros(1, 1, 1, 1)}}
        torch.save(shape, tmp / "shape.ckpt")
        expected = {"empty": "is empty (0 bytes)", "truncated": "cannot read checkpoint",
                    "crafted": "cannot read checkpoint", "unknown": "warp_speed", "shape": "do not fit its model"}
        for name, match in expected.items():
            out[name] = (tmp / f"{name}.ckpt", match)
        return out

    def test_evaluate_one_line_each(self, capsys, run, tmp_path):
        for name, (path, match) in self._variants(run, tmp_path).items():
            line = _one_line(capsys, ["evaluate", str(path)], match)
            assert str(path) in line, name

    def test_resume_from_truncated_checkpoint(self, capsys, run, tmp_path, mnist_dir):
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(run, copy)
        last = copy / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[:1000])
        _one_line(capsys, ["train", "--data-dir", str(mnist_dir), "--out", str(copy), "--resume", *TINY],
                  f"cannot read checkpoint {last}")


class TestCounts:
    @pytest.mark.parametrize(("argv", "match"), [
        (["--test-subset", "0"], "test_subset must be a positive integer; got 0"),
        (["--test-subset", "-1"], "test_subset must be a positive integer; got -1"),
        (["--test-subset", "20000"], "test_subset=20,000 exceeds the 2,000 test images"),
    ])
    def test_evaluate_counts(self, capsys, tmp_path, mnist_dir, argv, match):
        run = tmp_path / "run"
        assert main(["train", "--data-dir", str(mnist_dir), "--out", str(run), "--steps", "1", *TINY]) == 0
        capsys.readouterr()
        _one_line(capsys, ["evaluate", str(run), *argv], match)

    @pytest.mark.parametrize(("flag", "value", "match"), [
        ("--train-subset", "0", "train_subset must be a positive integer; got 0"),
        ("--train-subset", "6000", "train_subset=6,000 exceeds the 1,000 training images"),
        ("--val-subset", "6000", "val_subset=6,000 exceeds the 5,000 validation images"),
        ("--steps", "0", "steps must be a positive integer; got 0"),
    ])
    def test_train_counts(self, capsys, tmp_path, mnist_dir, flag, value, match):
        argv = ["train", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run"), *TINY, flag, value]
        _one_line(capsys, argv, match)
        assert not (tmp_path / "run").exists()

    def test_evaluate_api_validates(self, tiny_config, tmp_path):
        fit(tiny_config(steps=1))
        with pytest.raises(ValueError, match="test_subset must be a positive integer"):
            evaluate(tmp_path / "run", test_subset=0)
