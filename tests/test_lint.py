"""The style guide's gates, run with the suite (so `.ci/run` enforces them): ruff on the tree, mypy on src."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    r = _run("ruff", "check", "src", "tests", "benchmarks", "results", "scripts", "--output-format", "concise")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean():
    r = _run("mypy", "src/stnkit")
    assert r.returncode == 0, r.stdout + r.stderr


def test_shell_scripts_parse():
    for script in ("run.sh", ".ci/run", "scripts/reproduce_all.sh", "scripts/gpu_check.sh"):
        r = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{script}: {r.stderr}"
