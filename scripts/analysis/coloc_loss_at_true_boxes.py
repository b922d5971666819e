"""Does the triplet loss prefer the true boxes? One row per finished co-localisation set of a coloc run.

For each set (the same images the cell used, rebuilt from its seed 0), the triplet hinge loss (margin 1) on the
frozen encoder of ``<cells>/encoder`` is evaluated, averaged over 30 draws of the random negative crops, at three
window sets: the windows the transformer ended with (``s0/result.json``'s boxes), the true 28x28 digit frames, and
windows of the learned scale centred on the true digits. Also: the learned windows' mean offset from the digits'
centres and its spread over the images (pixels). If the true boxes' loss is lower than the learned boxes', the
objective is right and the optimisation stopped short of its optimum. Needs the encoder's checkpoint
(``<cells>/encoder/s0/checkpoints``), which is not committed (``results/coloc/diagnosis/README.md``).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/coloc_loss_at_true_boxes.py
"""

import json

import torch
from common import (
    COLOC_SIZE,
    RESULTS,
    add_coloc_arguments,
    box_params,
    coloc_set_name,
    load_encoder_and_digits,
    loss_at,
)
from common import parser as make_parser

from stnkit.data import make_coloc_set
from stnkit.files import atomic_write_text
from stnkit.losses import attended_box, box_iou

HEAD = ("# Triplet loss at the learned windows and at the true digit frames "
        "(`scripts/analysis/coloc_loss_at_true_boxes.py`)\n\n")


def main(argv: list[str] | None = None) -> None:
    """Evaluate every finished set; write the md table."""
    p = make_parser(__doc__)
    add_coloc_arguments(p)
    p.add_argument("--draws", type=int, default=30, help="draws of the random negatives per loss")
    p.add_argument("--out", default=RESULTS / "coloc" / "diagnosis" / "loss_at_true_boxes.md", help="markdown written")
    args = p.parse_args(argv)
    encoder, test_x, test_y, train_x = load_encoder_and_digits(args)
    rows = ["| set | correct % | loss: learned windows | loss: true frames | loss: learned scale, true centres | "
            "mean offset (x, y) px | offset std (x, y) px |", "|---|---|---|---|---|---|---|"]
    for cell in sorted(p for p in args.cells.iterdir() if p.name != "encoder" and (p / "result.json").exists()):
        res = json.loads((cell / "s0" / "result.json").read_text())
        kind, digit = coloc_set_name(cell.name)
        s = make_coloc_set(test_x, test_y, digit, kind=kind, n=len(res["boxes"]), seed=0, clutter_pool=train_x)
        learned_boxes = torch.tensor(res["boxes"], dtype=torch.float32)
        learned, true = box_params(learned_boxes), box_params(s.boxes.float())
        if not torch.allclose(attended_box("attention", learned, COLOC_SIZE), learned_boxes, atol=1e-3):
            raise ValueError(f"{cell.name}: boxes are not attention windows of an 84x84 image")
        correct = float((box_iou(learned_boxes, s.boxes.float()) > 0.5).float().mean()) * 100
        centred = torch.cat([learned[:, :1], true[:, 1:]], dim=1)
        offset = (learned[:, 1:] - true[:, 1:]) * COLOC_SIZE[0] / 2
        losses = [loss_at(encoder, s.images, w, args.draws) for w in (learned, true, centred)]
        rows.append(f"| {cell.name} | {correct:.0f} | {losses[0]:.3f} | {losses[1]:.3f} | {losses[2]:.3f} | "
                    f"{offset.mean(0)[0]:+.1f}, {offset.mean(0)[1]:+.1f} | "
                    f"{offset.std(0)[0]:.1f}, {offset.std(0)[1]:.1f} |")
        print(rows[-1], flush=True)
    atomic_write_text(args.out, HEAD + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
