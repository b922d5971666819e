"""``stnkit evaluate``: test error of a run or checkpoint (loaded with ``weights_only=True``)."""

from __future__ import annotations

import argparse
import json

from stnkit.commands._common import devices, progress_default

NAME = "evaluate"
HELP = "print the test error of a run directory or checkpoint"
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    p.add_argument("path", metavar="RUN_OR_CKPT", help="run directory or .ckpt file")
    p.add_argument("--best", action="store_true", help="use the run's best (lowest val error) checkpoint, not last")
    p.add_argument("--data-dir", help="folder with MNIST's IDX files (default: the run's)")
    p.add_argument("--test-subset", type=int, help="score only this many test images")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, mps, auto (default auto)")
    p.add_argument("--devices", default="1", help="devices: a number or auto (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from stnkit.training import evaluate

    m = evaluate(args.path, which="best" if args.best else "last", data_dir=args.data_dir,
                 test_subset=args.test_subset, accelerator=args.accelerator, devices=devices(args.devices),
                 progress=progress_default())
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        what = m["model"] + (f" ({m['transform']})" if m["transform"] else "")
        print(f"{what} on {m['dataset'].upper()}, step {m['steps']}: test error {m['test_err']:.2f} %")
    return 0
