"""The benchmark suite runs end to end on tiny shapes and writes well-formed rows (no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch

from stnkit.bench import main
from stnkit.bench.report import target_summary
from stnkit.bench.warps import OPS, WarpResult

KEYS = {"op", "shape", "pass", "baseline", "stnkit_ms", "baseline_ms", "ratio"}


def test_warp_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    md = tmp_path / "report.md"
    assert main(["--quick", "--sections", "warps", "--budget", "0.001", "--json", str(out), "--markdown", str(md),
                 "--shapes", "3,1,10,12->7,9", "2,1,5,6,7->4,5,6", "--threads", "1"]) == 0
    rows = json.loads(out.read_text())
    assert rows
    assert all(set(r) == KEYS for r in rows)
    assert {r["op"] for r in rows} == set(OPS)
    for r in rows:
        assert r["pass"] in ("fwd", "fwd+bwd")
        assert r["stnkit_ms"] > 0
        assert r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["stnkit_ms"], rel=1e-2)
        expected = "2,1,5,6,7->4,5,6" if r["op"] == "affine3d" else "3,1,10,12->7,9"
        assert r["shape"] == expected
    assert {"eager", "tps-plain", "tps-solve", "stnkit affine"} <= {r["baseline"] for r in rows}
    text = md.read_text()
    assert "| op | shape | pass |" in text
    assert "### Targets" in text
    assert "copy bandwidth" in text
    assert "warps (median ms" in capsys.readouterr().out


def test_kornia_rows(tmp_path):  # kornia is a dev dependency: always installed by the test command
    out = tmp_path / "rows.json"
    assert main(["--quick", "--sections", "warps", "--budget", "0.001", "--ops", "projective,tps16", "--passes",
                 "fwd", "--shapes", "2,1,8,8->8,8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {(r["op"], r["baseline"]) for r in rows} >= {("projective", "kornia"), ("tps16", "kornia")}


def test_training_and_data_sections(tmp_path):
    md = tmp_path / "report.md"
    assert main(["--quick", "--sections", "training,data", "--batch", "2", "--budget", "0.001", "--markdown",
                 str(md)]) == 0
    text = md.read_text()
    assert "## Training step" in text
    assert "| st-cnn | affine | rts |" in text
    assert "## Data generation" in text
    assert "| rts | 42x42 |" in text


def test_target_summary_flags_missed():
    rows = [WarpResult("affine", "256,1,28,28->28,28", "fwd+bwd", "eager", 2.0, 3.0, 0.1, 0.0),
            WarpResult("affine", "8,64,56,56->56,56", "fwd+bwd", "eager", 2.0, 2.5, 0.1, 0.0)]
    lines = target_summary(rows)
    assert any("1-3 channels" in line and "MISSED" in line for line in lines)
    assert any("many channels" in line and "met" in line for line in lines)
    cuda = target_summary(rows, "cuda")  # stricter on CUDA: >= 2x at many channels
    assert any("many channels" in line and "MISSED" in line for line in cuda)


def test_theta_only_pass(tmp_path):
    out = tmp_path / "rows.json"
    assert main(["--quick", "--sections", "warps", "--budget", "0.001", "--ops", "affine", "--passes",
                 "theta-bwd", "--shapes", "2,3,8,8->5,5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["pass"] for r in rows} == {"theta-bwd"}
    assert {"eager", "sampler only"} <= {r["baseline"] for r in rows}


def test_cuda_device_without_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CUDA rows run in scripts/gpu_check.sh")
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["--device", "cuda", "--sections", "warps"])


def test_bad_arguments():
    with pytest.raises(SystemExit, match="^stnkit bench: unknown --sections nope; expected some of warps, training"):
        main(["--sections", "nope"])
    with pytest.raises(SystemExit, match="^stnkit bench: unknown --ops rotation; expected some of affine,"):
        main(["--ops", "rotation"])
    with pytest.raises(SystemExit, match="^stnkit bench: unknown --passes bwd; expected some of fwd, fwd\\+bwd"):
        main(["--passes", "bwd"])
    with pytest.raises(SystemExit, match="^stnkit bench: unknown --sections ','; expected some of"):
        main(["--sections", ","])
