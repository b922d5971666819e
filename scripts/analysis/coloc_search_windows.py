"""What does the triplet loss's optimum localise? A search over windows, started from the committed cells' windows.

Per set (seed 0, the cell's 100 images, frozen encoder of ``cells/encoder``): starting from the windows the
transformer ended with (``result.json``), each image in turn gets the window, among a grid of candidates (scales
0.33 and 0.38 of the image, every 3 px inside it), that minimises the triplet hinge loss (margin 1) with every other
window held fixed: its own terms as anchor and as the others' partner, averaged over 5 draws of the random negative
crops (fixed for the search). Three sweeps over the images. No box is used: the search only lowers the loss the
transformer was trained on, globally per image instead of by gradient steps. Output: ``search_windows.md``.

    STNKIT_DATA=/path/to/mnist .venv/bin/python results/coloc/diagnosis/search_windows.py [t-0 t-5 ...]
"""

import json
import sys
from pathlib import Path

import torch

from stnkit.data import make_coloc_set
from stnkit.data.coloc import random_crop_params
from stnkit.losses import attended_box, box_iou, triplet_hinge_loss
from stnkit.sampling import warp

HERE = Path(__file__).parent
CELLS = HERE.parent / "cells"
SIZE, CROP, DRAWS, SWEEPS = 84, 28, 5, 3
sys.path.insert(0, str(HERE))
from loss_at_true_boxes import box_params, load_encoder_and_digits  # noqa: E402  (the script's own folder)


def candidates() -> torch.Tensor:
    """Attention parameters (K, 3) of the candidate windows: two scales, every 3 px, inside the image."""
    out = []
    for s in (28 / 84, 0.38):
        reach = 1.0 - s
        t = torch.arange(-reach, reach + 1e-6, 3 * 2 / SIZE)
        ty, tx = torch.meshgrid(t, t, indexing="ij")
        out.append(torch.stack([torch.full_like(tx, s), tx, ty], dim=-1).reshape(-1, 3))
    return torch.cat(out)


def embed(encoder: torch.nn.Module, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Embeddings (N, D) of the crops ``params`` (N, 3) of images ``x`` (N, 1, S, S)."""
    with torch.no_grad():
        return encoder(warp(x, params, "attention", (CROP, CROP)))


def search(encoder: torch.nn.Module, x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Coordinate descent of the triplet loss over the candidate windows, from the windows ``start`` (N, 3)."""
    n = x.shape[0]
    g = torch.Generator().manual_seed(0)
    neg = torch.stack([embed(encoder, x, random_crop_params(n, CROP, SIZE, g)) for _ in range(DRAWS)])  # (R, N, D)
    params, e = start.clone(), embed(encoder, x, start)
    cands = candidates()
    for _ in range(SWEEPS):
        for i in range(n):
            cand_e = embed(encoder, x[i:i + 1].expand(len(cands), -1, -1, -1), cands)  # (K, D)
            others = torch.cat([torch.arange(i), torch.arange(i + 1, n)])
            d = torch.cdist(cand_e, e[others]) ** 2  # (K, N-1): candidate to every other crop
            d_own = ((cand_e[None] - neg[:, i][:, None]) ** 2).sum(-1)  # (R, K): candidate to its own negatives
            d_oth = ((e[others][None] - neg[:, others]) ** 2).sum(-1)  # (R, N-1): others to their negatives
            as_anchor = torch.relu(d[None] - d_own[..., None] + 1).sum(-1).mean(0)  # (K,)
            as_partner = torch.relu(d[None] - d_oth[:, None] + 1).sum(-1).mean(0)  # (K,)
            best = int(torch.argmin(as_anchor + as_partner))
            params[i], e[i] = cands[best], cand_e[best]
    return params


def loss(encoder: torch.nn.Module, x: torch.Tensor, params: torch.Tensor) -> float:
    """The triplet loss of windows ``params``, averaged over 30 draws of the negatives (as the other script)."""
    g = torch.Generator().manual_seed(1)
    e = embed(encoder, x, params)
    return sum(float(triplet_hinge_loss(e, embed(encoder, x, random_crop_params(x.shape[0], CROP, SIZE, g)), 1.0))
               for _ in range(30)) / 30


def main() -> None:
    """Search every finished set named on the command line (default: all); write the md table."""
    encoder, test_x, test_y, train_x = load_encoder_and_digits()
    names = sys.argv[1:] or sorted(p.name for p in CELLS.iterdir() if (p / "result.json").exists()
                                   and p.name != "encoder")
    rows = ["| set | correct %: transformer | correct %: after the search | loss: transformer | "
            "loss: after the search |", "|---|---|---|---|---|"]
    for name in names:
        res = json.loads((CELLS / name / "s0" / "result.json").read_text())
        kind, digit = name.split("-")[:2]  # t-5, or t-5-heatmap
        s = make_coloc_set(test_x, test_y, int(digit), kind=kind, n=len(res["boxes"]), seed=0,
                           clutter_pool=train_x)
        start = box_params(torch.tensor(res["boxes"], dtype=torch.float32))
        found = search(encoder, s.images, start)
        ok = [float((box_iou(attended_box("attention", p, (SIZE, SIZE)), s.boxes) > 0.5).float().mean()) * 100
              for p in (start, found)]
        rows.append(f"| {name} | {ok[0]:.0f} | {ok[1]:.0f} | {loss(encoder, s.images, start):.3f} | "
                    f"{loss(encoder, s.images, found):.3f} |")
        print(rows[-1], flush=True)
        (HERE / "search_windows.md").write_text(  # after every set: a long run can be stopped at any time
            "# A search over windows from the transformer's, lowering the same loss (`search_windows.py`)\n\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
