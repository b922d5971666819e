"""Recipe comparison on RTS MNIST (2 CPU cores): error vs steps and vs training time, via stnkit.training.fit.

Usage: python results/recipes/sweep.py [--threads N] NAME [NAME ...]   (names from RUNS; -> results/recipes/NAME.json)
Timings depend on machine load: each result records the 1-minute load average before and after the run. On a
shared machine two 1-thread runs side by side are more robust than one 2-thread run (OpenMP threads spin when the
cores are oversubscribed); error vs steps does not depend on load at all.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from stnkit.reproduce.results import val_curve
from stnkit.training import TrainConfig, fit

HERE = Path(__file__).resolve().parent
DATA = os.environ.get("STNKIT_DATA", str(HERE.parents[1].parent / "shared" / "data" / "mnist"))

# Every run: the "cpu" recipe (one-cycle warm-up 20 %) with the fields of BASE, updated by its own overrides.
BASE = {"optimizer": "adam", "lr": 3e-3, "momentum": 0.0, "weight_decay": 0.0, "scheduler": "onecycle",
        "batch_size": 128, "steps": 1200, "loc_lr_scale": 1.0, "st_downsample": "output_size",
        "channels_last": True}
LONG = {"steps": 8000, "eval_every": 500}

RUNS: dict[str, tuple[str, dict]] = {  # name: (model, overrides of BASE)
    "adam3e-3-onecycle-b128": ("st-cnn", {}),
    "adam1e-3-onecycle-b128": ("st-cnn", {"lr": 1e-3}),
    "adam6e-3-onecycle-b128": ("st-cnn", {"lr": 6e-3}),
    "adam3e-3-onecycle-b128-loc0.1": ("st-cnn", {"loc_lr_scale": 0.1}),
    "adam3e-3-onecycle-b128-loc3": ("st-cnn", {"loc_lr_scale": 3.0}),
    "adam3e-3-onecycle-b128-loc10": ("st-cnn", {"loc_lr_scale": 10.0}),
    "adam3e-3-onecycle-b128-avgpool": ("st-cnn", {"st_downsample": "avgpool"}),
    "adam3e-3-onecycle-b64": ("st-cnn", {"batch_size": 64, "steps": 2400}),
    "adam3e-3-onecycle-b256": ("st-cnn", {"batch_size": 256, "steps": 600}),
    "adamw3e-3-cosine-b128": ("st-cnn", {"optimizer": "adamw", "scheduler": "cosine", "weight_decay": 1e-2}),
    "sgdm0.9-5e-2-onecycle-b128": ("st-cnn", {"optimizer": "sgd", "momentum": 0.9, "lr": 5e-2}),
    "sgd-plain-1e-2-b256": ("st-cnn", {"optimizer": "sgd", "lr": 1e-2, "scheduler": "none", "batch_size": 256,
                                       "steps": 600}),
    "cnn-adam3e-3-onecycle-b128": ("cnn", {}),
    "adam3e-3-onecycle-b128-long": ("st-cnn", {"steps": 6000, "eval_every": 500}),
    "adam3e-3-onecycle-b128-loc3-8000": ("st-cnn", {**LONG, "loc_lr_scale": 3.0}),
    "adam3e-3-onecycle-b128-loc3-avgpool-8000": ("st-cnn", {**LONG, "loc_lr_scale": 3.0,
                                                            "st_downsample": "avgpool"}),
    "adam3e-3-onecycle-b128-loc3-bf16": ("st-cnn", {"loc_lr_scale": 3.0, "precision": "bf16-mixed"}),
    "adam3e-3-onecycle-b128-loc3-bf16-15000": ("st-cnn", {"loc_lr_scale": 3.0, "precision": "bf16-mixed",
                                                          "steps": 15000, "eval_every": 1000}),
    "cnn-adam3e-3-onecycle-b128-loc3-8000": ("cnn", {**LONG, "loc_lr_scale": 3.0}),
    "cnn-adam3e-3-onecycle-b128-bf16-15000": ("cnn", {"precision": "bf16-mixed", "steps": 15000, "eval_every": 1000}),
}


def _load() -> float:
    return os.getloadavg()[0]


def run(name: str, extra: dict | None = None, threads: int = 2) -> dict:
    """Train one named run and write its curve and metrics to results/recipes/<name>.json."""
    model, overrides = RUNS[name]
    overrides = {**BASE, **overrides, **(extra or {})}
    overrides.setdefault("eval_every", max(1, overrides["steps"] // 6))
    config = TrainConfig(dataset="rts", model=model, recipe="cpu", data_dir=DATA, out=f"/tmp/stnkit-recipes/{name}",
                         progress=False, threads=threads, **overrides)
    load0 = _load()
    metrics = fit(config, overwrite=True)
    load1 = _load()
    curve = val_curve(config.out)
    result = {"name": name, "model": model, "recipe": config.to_dict()["resolved"], "metrics": metrics,
              "curve": curve, "load_before": load0, "load_after": load1, "cpu_threads": torch.get_num_threads()}
    (HERE / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: test {metrics['test_err']:.2f} %  val {metrics['val_err']:.2f} %  {metrics['train_s']:.0f} s  "
          f"load {load0:.1f}->{load1:.1f}", flush=True)
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    threads = 2
    if args[:1] == ["--threads"]:
        threads, args = int(args[1]), args[2:]
    for n in args:
        run(n, threads=threads)
