"""Smoke budget of the SVHN reproduction: proxy end to end, the table, resume, and real SVHN detected by its layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stnkit.models import create
from stnkit.reproduce import EXPERIMENTS, SeedRun, run, svhn
from tests.data.test_svhn import write_digit_struct

EXP = svhn.EXPERIMENT
QUIET = {"progress": False, "log": lambda *_: None}


def test_declaration():
    assert EXPERIMENTS["svhn"] is EXP
    assert [c.key for c in EXP.cells] == ["cnn", "st-single", "st-multi"]
    assert [c.fields["model"] for c in EXP.cells] == ["svhn-cnn", "svhn-st-single", "svhn-st-multi"]
    assert [c.paper for c in EXP.cells] == [4.0, 3.7, 3.6]
    assert [b.name for b in EXP.budgets] == ["smoke", "cpu-2.5k", "cpu-2k", "paper"]
    assert EXP.default_budget == "cpu-2k"
    paper = EXP.budget("paper").fields_for(EXP.cells[2])  # App. A.5 as PAPER.md has it
    assert (paper["optimizer"], paper["lr"], paper["lr_step"], paper["lr_gamma"]) == ("sgd", 0.01, 80_000, 0.1)
    assert (paper["steps"], paper["batch_size"], paper["weight_decay"]) == (400_000, 128, 5e-4)
    assert (paper["dropout"], paper["loc_lr_scale"], paper["val_size"], paper["width"]) == (0.5, 0.1, 5000, 1.0)
    cpu = EXP.budget("cpu-2.5k").fields
    assert cpu["steps"] == 2500
    assert cpu["train_size"] == cpu["steps"] * cpu["batch_size"]
    cpu = EXP.budget("cpu-2k").fields
    assert (cpu["steps"], cpu["batch_norm"], cpu["proxy"]) == (2000, True, {"max_length": 3, "shift": 0.2})
    assert not paper.get("batch_norm")  # the paper's recipe keeps A.5's network
    assert not paper.get("proxy")


def test_smoke_end_to_end_and_skip(tmp_path, mnist_dir, one_thread):
    out = tmp_path / "svhn"
    table = run(EXP, out, budget="smoke", data_dir=str(mnist_dir), **QUIET)
    assert [c["key"] for c in table["cells"]] == ["cnn", "st-single", "st-multi"]
    n_test = EXP.budget("smoke").fields["test_size"]
    for c in table["cells"]:
        assert c["dataset"] == "proxy"
        assert c["test_n"] == n_test
        assert c["input"] == [1, 64, 64]
        assert 0.0 <= c["error"] <= 100.0
        assert 0.0 <= c["digit_acc"] <= 100.0
        assert [h["step"] for h in c["history"]] == [2, 3]
        model = create(c["model"], input_size=64, in_channels=1, width=EXP.budget("smoke").fields["width"])
        assert c["params"] == sum(p.numel() for p in model.parameters())
    speed = json.loads((out / "speed.json").read_text())
    row = speed["rows"][0]
    assert row["input"] == [1, 64, 64]
    assert row["multi_vs_cnn"] == pytest.approx(row["st_multi_ms"] / row["cnn_ms"])
    md = (out / "svhn.md").read_text()
    assert "paper seq. error % (SVHN 64px; **a different dataset**)" in md
    assert "| 4.0 | 5.6 |" in md
    assert "| 3.7 | 3.9 |" in md
    assert "| 3.6 | 3.9 |" in md
    assert "1.06x" in md
    assert "Cells finished: 3 of 3" in md
    assert (out / "fig_svhn.png").stat().st_size > 5_000
    saved = json.loads((out / "svhn.json").read_text())
    assert saved["budget"] == "smoke"
    assert saved["speed"]["rows"][0]["cnn_ms"] == row["cnn_ms"]

    lines: list[str] = []
    stamp = (out / "cells" / "st-multi" / "result.json").stat().st_mtime_ns
    again = run(EXP, out, budget="smoke", data_dir=str(mnist_dir), progress=False, figures=False, log=lines.append)
    assert sum(line.endswith("skipped") for line in lines) == 3
    assert (out / "cells" / "st-multi" / "result.json").stat().st_mtime_ns == stamp
    assert [c["error"] for c in again["cells"]] == [c["error"] for c in table["cells"]]


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path, mnist_dir, one_thread):
    cell = EXP.cells[2]
    fields = EXP.budget("smoke").fields_for(cell)
    whole = svhn.train_seed(SeedRun(cell, 0, fields, tmp_path / "a" / "s0", tmp_path / "a", str(mnist_dir), False))
    part = tmp_path / "b" / "s0"
    svhn.train_seed(SeedRun(cell, 0, {**fields, "steps": 2}, part, tmp_path / "b", str(mnist_dir), False))
    (part / "metrics.json").unlink()  # stopped after step 2: only the checkpoint is left
    resumed = svhn.train_seed(SeedRun(cell, 0, fields, part, tmp_path / "b", str(mnist_dir), False))
    assert [h["step"] for h in resumed["history"]] == [2, 3]
    assert resumed["test_seq_error"] == whole["test_seq_error"]
    a = torch.load(tmp_path / "a" / "s0" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    torch.manual_seed(0)
    init = create(cell.fields["model"], input_size=64, in_channels=1, width=fields["width"]).state_dict()
    assert not torch.equal(init["length_head.weight"], a["length_head.weight"])  # the steps moved the weights


def _svhn_folder(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        folder = root / split
        folder.mkdir(parents=True)
        records = []
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / f"{i + 1}.png")
            digits = [(int(rng.integers(1, 11)), 5 + 12 * j, 8, 10, 20) for j in range(1 + i % 3)]
            records.append((f"{i + 1}.png", digits))
        write_digit_struct(folder / "digitStruct.mat", records)
    return root


def test_real_svhn_is_detected_and_kept_apart(tmp_path, mnist_dir, one_thread):
    root = _svhn_folder(tmp_path / "svhn-data")
    assert svhn.find_svhn(root) == root
    assert svhn.find_svhn(mnist_dir) is None
    assert svhn.find_svhn(root / "train") is None
    data = svhn.load_data(str(root), 0, EXP.budget("smoke").fields)
    assert (data.name, data.in_channels, data.input_size) == ("svhn", 3, 64)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 6, 4)  # val_size 8 capped at half of 12
    x, length, digits = data.test[1]
    assert x.shape == (3, 64, 64)
    assert int(length) == 2
    assert digits[2:].tolist() == [10, 10, 10]

    out = tmp_path / "out"
    table = run(EXP, out, budget="smoke", cells=["cnn"], data_dir=str(root), figures=False, **QUIET)
    (cell,) = table["cells"]
    assert cell["dataset"] == "svhn"
    assert cell["input"] == [3, 64, 64]
    assert cell["test_n"] == 4
    assert json.loads((out / "speed.json").read_text())["rows"][0]["input"] == [3, 64, 64]
    md = (out / "svhn.md").read_text()
    assert "**SVHN** (format 1" in md
    assert "a different dataset" not in md
    with pytest.raises(ValueError, match="holds results on the 'svhn' data; --data-dir now gives 'proxy'"):
        run(EXP, out, budget="smoke", cells=["st-single"], data_dir=str(mnist_dir), figures=False, **QUIET)
