"""Does the triplet loss prefer the true boxes? One row per finished co-localisation set of results/coloc.

For each set (the same 100 images the cell used, rebuilt from its seed), the triplet hinge loss (margin 1) on the
frozen encoder of ``cells/encoder`` is evaluated, averaged over 30 draws of the random negative crops, at three
window sets: the windows the transformer ended with (``result.json``'s boxes), the true 28x28 digit frames, and
windows of the learned scale centred on the true digits. Also: the learned windows' mean offset from the digits'
centres and its spread over the images (pixels). If the true boxes' loss is lower than the learned boxes', the
objective is right and the optimisation stopped short of its optimum. Output: ``loss_at_true_boxes.md``.

    STNKIT_DATA=/path/to/mnist .venv/bin/python results/coloc/diagnosis/loss_at_true_boxes.py
"""

import json
from pathlib import Path

import torch

from stnkit.data import find_mnist, load_mnist, make_coloc_set
from stnkit.data.coloc import random_crop_params
from stnkit.losses import attended_box, box_iou, triplet_hinge_loss
from stnkit.models.coloc import CNNEmbedding
from stnkit.sampling import warp
from stnkit.training import load_checkpoint

HERE = Path(__file__).parent
CELLS = HERE.parent / "cells"
SIZE = (84, 84)


def box_params(boxes: torch.Tensor) -> torch.Tensor:
    """Attention parameters (N, 3) whose attended boxes are ``boxes`` (N, 4): attended_box is affine in them."""
    ref = attended_box("attention", torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 0.2, 0.0]]), SIZE)
    width_per_s = ((ref[0, 2] - ref[0, 0]) - (ref[1, 2] - ref[1, 0])) / 0.5
    width_at_0 = (ref[0, 2] - ref[0, 0]) - width_per_s
    centre_per_t = ((ref[2, 0] + ref[2, 2]) - (ref[1, 0] + ref[1, 2])) / 2 / 0.2
    centre_at_0 = (ref[1, 0] + ref[1, 2]) / 2
    s = (boxes[:, 2] - boxes[:, 0] - width_at_0) / width_per_s
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack([s, (cx - centre_at_0) / centre_per_t, (cy - centre_at_0) / centre_per_t], dim=1)


def loss_at(encoder: torch.nn.Module, x: torch.Tensor, params: torch.Tensor, draws: int = 30) -> float:
    """The triplet loss of the windows ``params`` (N, 3), averaged over ``draws`` draws of the random negatives."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        e = encoder(warp(x, params, "attention", (28, 28)))
        return sum(float(triplet_hinge_loss(e, encoder(warp(x, random_crop_params(x.shape[0], 28, 84, g),
                                                                "attention", (28, 28))), 1.0))
                   for _ in range(draws)) / draws


def load_encoder_and_digits() -> tuple[CNNEmbedding, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cells' frozen embedding (of ``cells/encoder``) and MNIST's test digits, test labels and training digits."""
    torch.set_num_threads(1)
    lit, _, _ = load_checkpoint(CELLS / "encoder" / "s0")
    root = find_mnist(download=False)
    test_x, test_y = load_mnist(root, "test")
    train_x, _ = load_mnist(root, "train")
    return CNNEmbedding(lit.model), test_x, test_y, train_x


def main() -> None:
    """Evaluate every finished set; write the md table."""
    encoder, test_x, test_y, train_x = load_encoder_and_digits()
    rows = ["| set | correct % | loss: learned windows | loss: true frames | loss: learned scale, true centres | "
            "mean offset (x, y) px | offset std (x, y) px |", "|---|---|---|---|---|---|---|"]
    for cell in sorted(p for p in CELLS.iterdir() if p.name != "encoder" and (p / "result.json").exists()):
        res = json.loads((cell / "s0" / "result.json").read_text())
        kind, digit = cell.name.split("-")[:2]  # t-5, or t-5-heatmap
        s = make_coloc_set(test_x, test_y, int(digit), kind=kind, n=len(res["boxes"]), seed=0, clutter_pool=train_x)
        learned_boxes = torch.tensor(res["boxes"], dtype=torch.float32)
        learned, true = box_params(learned_boxes), box_params(s.boxes.float())
        assert torch.allclose(attended_box("attention", learned, SIZE), learned_boxes, atol=1e-3)
        correct = float((box_iou(learned_boxes, s.boxes.float()) > 0.5).float().mean()) * 100
        centred = torch.cat([learned[:, :1], true[:, 1:]], dim=1)
        offset = (learned[:, 1:] - true[:, 1:]) * SIZE[0] / 2  # normalised -> pixels
        rows.append(f"| {cell.name} | {correct:.0f} | {loss_at(encoder, s.images, learned):.3f} | "
                    f"{loss_at(encoder, s.images, true):.3f} | {loss_at(encoder, s.images, centred):.3f} | "
                    f"{offset.mean(0)[0]:+.1f}, {offset.mean(0)[1]:+.1f} | "
                    f"{offset.std(0)[0]:.1f}, {offset.std(0)[1]:.1f} |")
        print(rows[-1], flush=True)
    (HERE / "loss_at_true_boxes.md").write_text(
        "# Triplet loss at the learned windows and at the true digit frames (`loss_at_true_boxes.py`)\n\n"
        + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
