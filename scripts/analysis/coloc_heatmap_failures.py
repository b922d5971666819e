"""Why the heatmap localisation fails on a set: the loss at its windows, and restarts.

For each set named (default ``t-3-heatmap tc-3-heatmap``, the committed cells' failures): the triplet loss (margin 1,
frozen encoder, 30 draws of the negatives, as ``coloc_loss_at_true_boxes.py``) at the windows of the cell
(``<cells>/<set>/s0/result.json``) and at the true 28x28 frames; then the same optimisation
(``stnkit.reproduce.coloc.WINDOW``, ``--steps`` full-batch steps, lr 0.01) restarted with other seeds of the weights
and the negatives on the same images, each restart's % correct and loss. Output:
``<out>/heatmap_failures_<set>.md`` (one file a set, so two sets can run side by side). Needs the encoder's
checkpoint (not committed: ``results/coloc/diagnosis/README.md``).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/coloc_heatmap_failures.py [t-3-heatmap ...]
"""

import json
from pathlib import Path

import torch
from common import (
    RESULTS,
    add_coloc_arguments,
    box_params,
    coloc_set_name,
    existing_dir,
    load_encoder_and_digits,
    loss_at,
)
from common import parser as make_parser

from stnkit.data import make_coloc_set
from stnkit.reproduce.coloc import WINDOW
from stnkit.training.coloc import fit_coloc


def main(argv: list[str] | None = None) -> None:
    """Evaluate and restart every set named on the command line; write one md table per set."""
    p = make_parser(__doc__)
    p.add_argument("sets", nargs="*", default=["t-3-heatmap", "tc-3-heatmap"], help="coloc heatmap set keys")
    add_coloc_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="restart seeds")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps per restart")
    p.add_argument("--draws", type=int, default=30, help="draws of the random negatives per loss")
    p.add_argument("--out", type=existing_dir, default=RESULTS / "coloc" / "diagnosis",
                   help="folder of the heatmap_failures_<set>.md files")
    args = p.parse_args(argv)
    encoder, test_x, test_y, train_x = load_encoder_and_digits(args)
    for name in args.sets:
        res = json.loads((args.cells / name / "s0" / "result.json").read_text())
        kind, digit = coloc_set_name(name)
        s = make_coloc_set(test_x, test_y, digit, kind=kind, n=len(res["ious"]), seed=0, clutter_pool=train_x)
        final = torch.tensor(res["history"][-1]["params"], dtype=torch.float32)  # (N, 3): every image's window
        true_loss = loss_at(encoder, s.images, box_params(s.boxes.float()), args.draws)
        rows = ["| run | correct % | loss at its windows |", "|---|---|---|",
                f"| true 28x28 frames | 100 | {true_loss:.3f} |",
                f"| committed cell (seed 0) | {res['correct']:.0f} | "
                f"{loss_at(encoder, s.images, final, args.draws):.3f} |"]
        for seed in args.seeds:
            r = fit_coloc(s, encoder, steps=args.steps, eval_every=max(1, args.steps // 10), lr=1e-2, seed=seed,
                          localization="heatmap", **WINDOW)
            params = torch.tensor(r["history"][-1]["params"], dtype=torch.float32)
            rows.append(f"| restart, seed {seed} | {r['correct']:.0f} | "
                        f"{loss_at(encoder, s.images, params, args.draws):.3f} |")
            print(name, rows[-1], flush=True)
        Path(args.out, f"heatmap_failures_{name}.md").write_text(
            f"# {name}: loss at the windows, and restarts (`scripts/analysis/coloc_heatmap_failures.py`)\n\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
