"""The SVHN step-time comparison runs and reports the three models (no timing asserted)."""

from stnkit.bench.svhn import PAPER_RATIO, main, run_svhn_steps


def test_smoke(capsys):
    result = run_svhn_steps(width=0.0625, batch=2, input_size=32, in_channels=1, budget_s=0.0, min_reps=1)
    assert min(result.cnn_ms, result.st_single_ms, result.st_multi_ms) > 0
    assert result.multi_vs_cnn == result.st_multi_ms / result.cnn_ms
    assert "ST-CNN Multi" in result.table()
    assert main(["--width", "0.0625", "--batch", "2", "--size", "32", "--channels", "1", "--budget", "0"]) == 0
    assert f"(paper {PAPER_RATIO:.2f})" in capsys.readouterr().out
