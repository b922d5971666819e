"""``stnkit reproduce``: one command per experiment of the paper, resumable per cell."""

from __future__ import annotations

import argparse
import importlib

from stnkit.commands._common import progress_default

NAME = "reproduce"
HELP = "reproduce one of the paper's experiments (resumable per cell): table1, coloc, attention, addition, mnist3d"
ORDER = 40
DESCRIPTION = (
    "Train and evaluate every cell of an experiment and write <out>/<name>.json and <name>.md (ours beside the "
    "paper's numbers, budget stated) plus figures. Finished cells are skipped on rerun and an interrupted cell "
    "resumes from its checkpoint, so an experiment can be filled over several runs. Budgets: smoke (seconds, for "
    "tests), cpu (a fast CPU recipe, 30-60 minutes per experiment on 2 cores; Table 1: about 4 hours), paper "
    "(the paper's recipe, 3 seeds)."
)

#: experiment name -> module of stnkit.reproduce with ``run(out, budget, cells, seeds, data_dir, progress, ...)``
EXPERIMENTS = {
    "table1": "Table 1: distorted MNIST (R, RTS, P, E, TC), FCN/CNN/ST-FCN/ST-CNN",
    "coloc": "App. A.2: co-localisation of digits with a triplet loss (T and TC, per digit, two loc. nets)",
    "attention": "attention for efficiency: an ST crop + small CNN vs a CNN on the full TC input (error and time)",
    "addition": "App. A.1: MNIST addition, FCN/CNN/ST-FCN/2xST-FCN",
    "mnist3d": "App. A.3: 3-D MNIST, a 3-D transformer + projection vs a fixed projection",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    p.add_argument("experiment", choices=list(EXPERIMENTS), metavar="EXPERIMENT",
                   help="; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    p.add_argument("--budget", default="cpu", choices=("smoke", "cpu", "long", "paper"),
                   help="training budget (default cpu; long: table1 only, the whole cpu recipe for chosen cells)")
    p.add_argument("--cells", nargs="+", metavar="PATTERN",
                   help="run only these cells (table1: dataset[:model[:transform]]; others: shell patterns over the "
                        "cell keys, e.g. 'st-*'); default all")
    p.add_argument("--seeds", type=int, help="seeds per cell, averaged (default 1; 3 for the paper budget)")
    p.add_argument("--out", help="output folder (default results/<experiment>)")
    p.add_argument("--data-dir",
                   help="folder with MNIST's IDX files (default $STNKIT_DATA, then ~/.cache/stnkit/mnist)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the figures")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="one line per validation instead of progress bars (default: bars on a terminal)")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    module = importlib.import_module(f"stnkit.reproduce.{args.experiment}")
    if args.budget not in module.BUDGETS:
        raise ValueError(f"reproduce {args.experiment} has no {args.budget!r} budget; choose one of "
                         f"{', '.join(module.BUDGETS)}")
    progress = progress_default() if args.progress is None else args.progress
    overrides = {"threads": args.threads} if args.threads else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or f"results/{args.experiment}"
    print(f"stnkit reproduce {args.experiment}: {args.budget} budget, output {out}")
    table = module.run(out, budget=args.budget, cells=args.cells, seeds=args.seeds, data_dir=args.data_dir,
                       progress=progress, figures=args.figures, overrides=overrides)
    print(f"{len(table.get('cells', []))} cells finished; tables in {out}/{args.experiment}.md and .json")
    return 0
