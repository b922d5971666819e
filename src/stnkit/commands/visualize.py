"""``stnkit visualize``: test digits beside the transformer's outputs, the attended region drawn on the input."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "visualize"
HELP = "draw what a run's spatial transformer does to test digits (PNG, or a GIF over checkpoints)"
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    p.add_argument("path", metavar="RUN_OR_CKPT", help="run directory (or .ckpt file, not with --gif)")
    p.add_argument("--out", required=True, help="output image, e.g. fig.png (fig.gif with --gif)")
    p.add_argument("--gif", action="store_true", help="animate over the run's checkpoint snapshots")
    p.add_argument("-n", "--num-images", type=int, help="test digits to show (default 16; 8 for GIFs)")
    p.add_argument("--cols", type=int, default=4, help="input/output pairs per row")
    p.add_argument("--best", action="store_true", help="use the best checkpoint instead of the last")
    p.add_argument("--data-dir", help="folder with MNIST's IDX files (default: the run's)")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    out = Path(args.out)
    if not out.parent.exists() or not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    from stnkit import viz

    if args.gif:
        if not Path(args.path).is_dir():
            raise ValueError("--gif needs a run directory (it animates the run's checkpoint snapshots)")
        written = viz.gif_of_run(args.path, out, n=args.num_images or 8, ncols=args.cols, data_dir=args.data_dir)
    else:
        written = viz.visualize_run(args.path, out, n=args.num_images or 16, ncols=args.cols,
                                    which="best" if args.best else "last", data_dir=args.data_dir)
    print(f"wrote {written}")
    return 0
