"""Why the first long RTS ST-CNN (localisation lr x3) ended behind the CNN: its localisation net died.

For each history snapshot of the run (``<run>/s0/checkpoints/history/step-*.ckpt``, kept on the machine that ran
it, not in git) this prints, on 500 RTS test images: the error, how many of the localisation net's last hidden
units are dead (zero for every image), and the std over the images of the predicted theta (0: one fixed warp for
all). Output in ``--out``: ``diagnosis.md``, and ``curves.png``: this run's validation curve beside the rerun with
localisation lr x1 and the CNN (``--compare``; each cell's ``s0/logs/metrics.csv`` and ``s0/metrics.json``).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/table1_long_loc_lr_x3_diagnose.py
"""

import json
from pathlib import Path

import torch
from common import RESULTS, existing_dir, localization_state
from common import parser as make_parser

from stnkit.data import distort, find_mnist, load_mnist
from stnkit.reproduce.results import val_curve
from stnkit.training import load_checkpoint
from stnkit.viz import error_curves

LONG = RESULTS / "table1-long"
NOTE = ("Step 0: the regression layer starts at zero weights (the identity for every image), so theta does not vary "
        "yet although the features do. From step 7,000 every unit is dead: the transformer is one fixed warp.\n")


def main(argv: list[str] | None = None) -> None:
    """Tabulate the localisation net of every snapshot; draw the curves."""
    p = make_parser(__doc__)
    p.add_argument("--run", type=existing_dir, default=LONG / "loc-lr-x3" / "rts-st-cnn-affine",
                   help="the x3 cell folder (holding s0/checkpoints/history)")
    p.add_argument("--compare", type=existing_dir, nargs=2, metavar=("X1_CELL", "CNN_CELL"),
                   default=[LONG / "cells" / "rts-st-cnn-affine", LONG / "cells" / "rts-cnn"],
                   help="the localisation lr x1 cell and the CNN cell drawn beside it")
    p.add_argument("--images", type=int, default=500, help="RTS test images")
    p.add_argument("--out", type=existing_dir, default=LONG / "loc-lr-x3", help="folder of diagnosis.md, curves.png")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x, y = load_mnist(find_mnist(args.data, download=False), "test")
    x, y = x[:args.images], y[:args.images]
    images = distort("rts", x, torch.arange(len(x)), split="test").images
    rows = [f"| step | error % ({args.images} test images) | dead units of the last hidden layer | "
            "theta std over images |", "|---|---|---|---|"]
    for ckpt in sorted((args.run / "s0" / "checkpoints" / "history").glob("step-*.ckpt")):
        lit, _, _ = load_checkpoint(ckpt)
        state = localization_state(lit.model.eval(), images, y)
        rows.append(f"| {int(ckpt.stem.split('-')[1])} | {state['error']:.1f} | {state['dead']} of {state['units']} "
                    f"| {state['param_std']:.4f} |")
    text = ("# Long RTS ST-CNN, localisation lr x3: the localisation net over training "
            "(`scripts/analysis/table1_long_loc_lr_x3_diagnose.py`)\n\n" + "\n".join(rows)
            + "\n\n" + NOTE)
    Path(args.out, "diagnosis.md").write_text(text)
    print(text)
    runs = [("ST-CNN affine, localisation lr x3 (died at 6-7k)", args.run),
            ("ST-CNN affine, localisation lr x1", args.compare[0]),
            ("CNN (curve before 11k lost on resume)", args.compare[1])]
    series = [{"label": label, "curve": val_curve(cell / "s0"),
               "test_err": json.loads((cell / "s0" / "metrics.json").read_text())["test_err"]} for label, cell in runs]
    fig = error_curves(series, "RTS, 15k steps: the localisation lr decides whether the transformer survives")
    fig.savefig(Path(args.out, "curves.png"), dpi=90)


if __name__ == "__main__":
    main()
