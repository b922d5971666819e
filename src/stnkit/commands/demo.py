"""``stnkit demo``: the README's main job. Train an ST-CNN and the CNN on RTS MNIST, compare, draw the figure."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stnkit.commands._common import print_metrics_table, progress_default, set_threads
from stnkit.files import atomic_write_json

NAME = "demo"
HELP = "train an ST-CNN and a CNN on RTS MNIST (about 5 minutes on 2 CPU cores), print both errors, draw the figure"
ORDER = 1
DESCRIPTION = (
    "Train an ST-CNN (affine) and the CNN baseline on RTS-distorted MNIST with the 'demo' recipe, print both test "
    "errors side by side and write the spatial transformer's figure (inputs with the attended region, outputs)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    p.add_argument("--data-dir",
                   help="folder with MNIST's IDX files (default $STNKIT_DATA, then ~/.cache/stnkit/mnist)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--recipe", default="demo", help="training recipe (default demo)")
    p.add_argument("--transform", default="affine", help="transform of the ST-CNN (default affine)")
    p.add_argument("--steps", type=int, help="optimiser steps of each model (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data and distortions (default 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    q = p.add_argument_group("quick checks (smaller data)")
    q.add_argument("--train-subset", type=int, help="train on this many images only (default all)")
    q.add_argument("--val-subset", type=int, help="validate on this many images only (default all)")
    q.add_argument("--test-subset", type=int, help="test on this many images only (default all 10,000)")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from stnkit.training import TrainConfig, fit
    from stnkit.training.callbacks import PrintValidation
    from stnkit.training.errors import RunInterrupted
    from stnkit.viz import visualize_run

    set_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.out)
    rows = []
    for i, model in enumerate(("st-cnn", "cnn"), 1):
        config = TrainConfig(
            dataset="rts", model=model, transform=args.transform, recipe=args.recipe, steps=args.steps,
            seed=args.seed, data_dir=args.data_dir, out=str(out / model), progress=progress_default(),
            threads=args.threads, train_subset=args.train_subset, val_subset=args.val_subset,
            test_subset=args.test_subset, accelerator="cpu",
        )

        def announce(resolved: TrainConfig, i: int = i, model: str = model) -> None:  # after every check
            r = resolved.resolved_recipe()
            print(f"[{i}/2] training {model}{' (' + args.transform + ')' if model.startswith('st-') else ''} on "
                  f"RTS MNIST: {r.steps} steps of {r.batch_size}, {r.optimizer} lr {r.lr:g} {r.scheduler}, "
                  f"{resolved.precision_used()}", flush=True)

        try:
            m = fit(config, overwrite=True, on_start=announce,
                    callbacks=[] if config.progress else [PrintValidation("      ")])
        except RunInterrupted as e:
            e.hint = "the demo starts over when run again"
            raise
        m["label"] = model.upper() + (f" ({args.transform})" if model.startswith("st-") else "")
        rows.append(m)
        print(f"      test error {m['test_err']:.2f} % after {m['train_s']:.0f} s", flush=True)
    figure = visualize_run(out / "st-cnn", out / "st-cnn-rts.png", data_dir=args.data_dir)
    wall = time.perf_counter() - t0
    print()
    print_metrics_table(rows, [("label", "model"), ("test_err", "test error %"), ("val_err", "val error %"),
                               ("params", "parameters"), ("steps", "steps"), ("train_s", "train s")])
    print()
    print(f"figure: {figure}   (inputs with the attended region in red, beside the transformer's outputs)")
    print(f"total wall time {wall:.0f} s; runs in {out}/st-cnn and {out}/cnn")
    summary = {"wall_s": round(wall, 1), "figure": str(figure), "runs": rows}
    atomic_write_json(out / "demo.json", summary)
    return 0
