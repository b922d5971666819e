"""``stnkit reproduce``: one command per experiment of the paper, resumable per cell."""

from __future__ import annotations

import argparse
from typing import Any

from stnkit.commands._common import progress_default

NAME = "reproduce"
HELP = ("reproduce one of the paper's experiments (resumable per cell): table1, coloc, attention, addition, mnist3d, "
        "svhn, registration")
ORDER = 40
DESCRIPTION = (
    "Train and evaluate every cell of an experiment and write <out>/<name>.json and <name>.md (ours beside the "
    "paper's numbers, budget stated, <out>/NOTES.md appended) plus figures. Finished cells are skipped on rerun (the "
    "command lists them; give another --out to run them afresh) and an interrupted cell resumes from its "
    "checkpoint, so an experiment can be filled over several runs. Budgets: smoke (seconds, for tests), cpu-<steps> "
    "(a fast CPU recipe, 30-60 minutes per experiment on 2 cores; Table 1's cpu-3k: about 4 hours), paper (the "
    "paper's recipe, 3 seeds); the old name cpu still works."
)


def _experiments() -> dict[str, Any]:
    from stnkit.reproduce import EXPERIMENTS

    return EXPERIMENTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    experiments = _experiments()
    budgets = dict.fromkeys(n for e in experiments.values() for b in e.budgets for n in (b.name, *b.aliases))
    p.add_argument("experiment", choices=list(experiments), metavar="EXPERIMENT",
                   help="; ".join(f"{k}: {e.title}" for k, e in experiments.items()))
    p.add_argument("--budget", choices=list(budgets), metavar="BUDGET",
                   help="training budget: " + "; ".join(f"{k}: {', '.join(b.name for b in e.budgets)}"
                                                        for k, e in experiments.items())
                   + " (default: each experiment's cpu-* one; cpu and long are the old names)")
    p.add_argument("--cells", nargs="+", metavar="PATTERN",
                   help="run only these cells (table1: dataset[:model[:transform]]; others: shell patterns over the "
                        "cell keys, e.g. 'st-*'); default all")
    p.add_argument("--seeds", type=int, help="seeds per cell, averaged (default 1; 3 for the paper budget)")
    p.add_argument("--out", help="output folder (default results/<experiment>)")
    p.add_argument("--data-dir",
                   help="folder with MNIST's IDX files (default $STNKIT_DATA, then ~/.cache/stnkit/mnist); svhn: "
                        "or a folder of SVHN's format-1 train/ and test/ folders, to train on real SVHN")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the figures")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="one line per validation instead of progress bars (default: bars on a terminal)")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`stnkit.reproduce.run` that the command line gives."""
    return {"out": args.out or f"results/{args.experiment}", "budget": args.budget, "cells": args.cells,
            "seeds": args.seeds, "data_dir": args.data_dir,
            "progress": progress_default() if args.progress is None else args.progress, "figures": args.figures,
            "overrides": {"threads": args.threads} if args.threads else None}


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from stnkit.reproduce import run as run_experiment

    experiment = _experiments()[args.experiment]
    options = run_options(args)
    budget = experiment.budget(args.budget, log=print)  # an unknown or foreign budget fails here, before training
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"stnkit reproduce {args.experiment}: {budget.name} budget, output {options['out']}")
    table = run_experiment(experiment, **{**options, "budget": budget.name})
    print(f"{len(table.get('cells', []))} cells finished; tables in {options['out']}/{args.experiment}.md and .json")
    return 0
