"""Recipe comparison on RTS MNIST (2 CPU cores): error vs steps and vs training time, via stnkit.training.fit.

Trains each named run of ``RUNS`` (``--list``) and writes ``<out>/NAME.json`` (default ``results/recipes``): the
resolved recipe, the final metrics, the validation curve, the torch thread count and the 1-minute load average
before and after the run (timings depend on machine load). On a shared machine two 1-thread runs side by side are
more robust than one 2-thread run (OpenMP threads spin when the cores are oversubscribed); error vs steps does not
depend on load at all. ``--set KEY=VALUE`` overrides a TrainConfig field of every run (JSON values).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/recipes_sweep.py [--threads N] NAME [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from common import RESULTS, existing_dir
from common import parser as make_parser

from stnkit.data import find_mnist
from stnkit.reproduce.results import val_curve
from stnkit.training import TrainConfig, fit

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


def load_average() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def run(name: str, data_dir: str, out: Path, work: Path, extra: dict | None = None, threads: int = 2) -> dict:
    """Train one named run (``work/NAME``) and write its curve and metrics to ``out/NAME.json``."""
    model, overrides = RUNS[name]
    overrides = {**BASE, **overrides, **(extra or {})}
    overrides.setdefault("eval_every", max(1, overrides["steps"] // 6))
    config = TrainConfig(dataset="rts", model=model, recipe="cpu", data_dir=data_dir, out=str(work / name),
                         progress=False, threads=threads, **overrides)
    load0 = load_average()
    metrics = fit(config, overwrite=True)
    load1 = load_average()
    result = {"name": name, "model": model, "recipe": config.to_dict()["resolved"], "metrics": metrics,
              "curve": val_curve(config.out), "load_before": load0, "load_after": load1,
              "cpu_threads": torch.get_num_threads()}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: test {metrics['test_err']:.2f} %  val {metrics['val_err']:.2f} %  {metrics['train_s']:.0f} s  "
          f"load {load0:.1f}->{load1:.1f}", flush=True)
    return result


def override(text: str) -> tuple[str, object]:
    """``argparse`` type: ``KEY=VALUE`` with a JSON value (a bare word stays a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    """Train every run named on the command line."""
    p = make_parser(__doc__)
    p.add_argument("names", nargs="*", help="runs of RUNS")
    p.add_argument("--list", action="store_true", help="print the run names and exit")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--set", type=override, action="append", default=[], metavar="KEY=VALUE",
                   help="TrainConfig field for every run (repeatable)")
    p.add_argument("--work", type=Path, default=Path("/tmp/stnkit-recipes"), help="folder of the training runs")
    p.add_argument("--out", type=existing_dir, default=RESULTS / "recipes", help="folder of the NAME.json files")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(RUNS))
        return
    unknown = [n for n in args.names if n not in RUNS]
    if unknown or not args.names:
        p.error(f"expected run names from --list, got {unknown or 'none'}")
    data_dir = str(find_mnist(args.data, download=False))
    for name in args.names:
        run(name, data_dir, args.out, args.work, dict(args.set), threads=args.threads)


if __name__ == "__main__":
    main()
