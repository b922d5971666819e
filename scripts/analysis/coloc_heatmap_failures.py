"""Why the heatmap localisation fails on TC digits 1 and 8: the loss at its windows, and restarts.

For each set named (default ``tc-1-heatmap tc-8-heatmap``): the triplet loss (as ``loss_at_true_boxes.py``: margin
1, frozen encoder, 30 draws of the negatives) at the windows of the committed cell and at the true 28x28 frames;
then the same optimisation (``stnkit.reproduce.coloc.WINDOW``, 1,000 full-batch steps, lr 0.01) restarted with
other seeds of the weights and the negatives on the same 100 images, each restart's % correct and loss. Output:
``heatmap_failures_<set>.md`` (one file a set, so two sets can run side by side).

    STNKIT_DATA=/path/to/mnist .venv/bin/python results/coloc/diagnosis/heatmap_failures.py [tc-1-heatmap ...]
"""

import json
import sys
from pathlib import Path

import torch

from stnkit.data import make_coloc_set
from stnkit.reproduce.coloc import WINDOW
from stnkit.training.coloc import fit_coloc

HERE = Path(__file__).parent
CELLS = HERE.parent / "cells"
RESTART_SEEDS = (1, 2)
sys.path.insert(0, str(HERE))
from loss_at_true_boxes import box_params, load_encoder_and_digits, loss_at  # noqa: E402  (the script's own folder)


def main() -> None:
    """Evaluate and restart every set named on the command line; write one md table per set."""
    torch.set_num_threads(1)
    encoder, test_x, test_y, train_x = load_encoder_and_digits()
    for name in sys.argv[1:] or ["tc-1-heatmap", "tc-8-heatmap"]:
        res = json.loads((CELLS / name / "s0" / "result.json").read_text())
        kind, digit = name.split("-")[:2]
        s = make_coloc_set(test_x, test_y, int(digit), kind=kind, n=len(res["ious"]), seed=0, clutter_pool=train_x)
        final = torch.tensor(res["history"][-1]["params"], dtype=torch.float32)  # (N, 3): every image's window
        rows = ["| run | correct % | loss at its windows |", "|---|---|---|",
                f"| true 28x28 frames | 100 | {loss_at(encoder, s.images, box_params(s.boxes.float())):.3f} |",
                f"| committed cell (seed 0) | {res['correct']:.0f} | {loss_at(encoder, s.images, final):.3f} |"]
        for seed in RESTART_SEEDS:
            r = fit_coloc(s, encoder, steps=1000, eval_every=100, lr=1e-2, seed=seed, localization="heatmap",
                          **WINDOW)
            params = torch.tensor(r["history"][-1]["params"], dtype=torch.float32)
            rows.append(f"| restart, seed {seed} | {r['correct']:.0f} | {loss_at(encoder, s.images, params):.3f} |")
            print(name, rows[-1], flush=True)
        (HERE / f"heatmap_failures_{name}.md").write_text(
            f"# {name}: loss at the windows, and restarts (`heatmap_failures.py`)\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
