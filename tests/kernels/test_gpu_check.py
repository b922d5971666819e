"""scripts/gpu_check.sh on a machine without CUDA: one line, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_without_cuda(*cmd):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_gpu_check_without_cuda_prints_one_line_and_exits_0():
    r = run_without_cuda("bash", str(ROOT / "scripts" / "gpu_check.sh"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "no CUDA device\n"

