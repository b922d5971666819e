"""What does the triplet loss's optimum localise? A search over windows, started from a coloc run's windows.

Per set (seed 0, the cell's images, frozen encoder of ``<cells>/encoder``): starting from the windows the
transformer ended with (``s0/result.json``), each image in turn gets the window, among a grid of candidates (scales
0.33 and 0.38 of the image, every 3 px inside it), that minimises the triplet hinge loss (margin 1) with every other
window held fixed: its own terms as anchor and as the others' partner, averaged over 5 draws of the random negative
crops (fixed for the search). Three sweeps over the images. No box is used: the search only lowers the loss the
transformer was trained on, globally per image instead of by gradient steps. Output: ``--out`` (rewritten after
every set). Needs the encoder's checkpoint (not committed: ``results/coloc/diagnosis/README.md``).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/coloc_search_windows.py [t-0 t-5 ...]
"""

import json

import torch
from common import (
    RESULTS,
    add_coloc_arguments,
    box_params,
    coloc_set_name,
    load_encoder_and_digits,
    loss_at,
)
from common import parser as make_parser

from stnkit.data import make_coloc_set
from stnkit.data.coloc import random_crop_params
from stnkit.files import atomic_write_text
from stnkit.losses import attended_box, box_iou
from stnkit.sampling import warp

SIZE, CROP, DRAWS = 84, 28, 5


def candidates(px: float = 3.0) -> torch.Tensor:
    """Attention parameters (K, 3) of the candidate windows: two scales, every ``px`` pixels, inside the image."""
    out = []
    for s in (28 / 84, 0.38):
        reach = 1.0 - s
        t = torch.arange(-reach, reach + 1e-6, px * 2 / SIZE)
        ty, tx = torch.meshgrid(t, t, indexing="ij")
        out.append(torch.stack([torch.full_like(tx, s), tx, ty], dim=-1).reshape(-1, 3))
    return torch.cat(out)


def embed(encoder: torch.nn.Module, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Embeddings (N, D) of the crops ``params`` (N, 3) of images ``x`` (N, 1, S, S)."""
    with torch.no_grad():
        return encoder(warp(x, params, "attention", (CROP, CROP)))


def search(encoder: torch.nn.Module, x: torch.Tensor, start: torch.Tensor, sweeps: int = 3,
           px: float = 3.0) -> torch.Tensor:
    """Coordinate descent of the triplet loss over the candidate windows, from the windows ``start`` (N, 3)."""
    n = x.shape[0]
    g = torch.Generator().manual_seed(0)
    neg = torch.stack([embed(encoder, x, random_crop_params(n, CROP, SIZE, g)) for _ in range(DRAWS)])  # (R, N, D)
    params, e = start.clone(), embed(encoder, x, start)
    cands = candidates(px)
    for _ in range(sweeps):
        for i in range(n):
            cand_e = embed(encoder, x[i:i + 1].expand(len(cands), -1, -1, -1), cands)  # (K, D)
            others = torch.cat([torch.arange(i), torch.arange(i + 1, n)])
            d = torch.cdist(cand_e, e[others]) ** 2  # (K, N-1)
            d_own = ((cand_e[None] - neg[:, i][:, None]) ** 2).sum(-1)  # (R, K)
            d_oth = ((e[others][None] - neg[:, others]) ** 2).sum(-1)  # (R, N-1)
            as_anchor = torch.relu(d[None] - d_own[..., None] + 1).sum(-1).mean(0)  # (K,)
            as_partner = torch.relu(d[None] - d_oth[:, None] + 1).sum(-1).mean(0)  # (K,)
            best = int(torch.argmin(as_anchor + as_partner))
            params[i], e[i] = cands[best], cand_e[best]
    return params


def main(argv: list[str] | None = None) -> None:
    """Search every finished set named on the command line (default: all); write the md table."""
    p = make_parser(__doc__)
    p.add_argument("sets", nargs="*", help="coloc set keys (default: every finished set)")
    add_coloc_arguments(p)
    p.add_argument("--sweeps", type=int, default=3, help="sweeps over the images")
    p.add_argument("--grid-px", type=float, default=3.0, help="spacing of the candidate windows (pixels)")
    p.add_argument("--draws", type=int, default=30, help="draws of the random negatives for the reported losses")
    p.add_argument("--out", default=RESULTS / "coloc" / "diagnosis" / "search_windows.md", help="markdown written")
    args = p.parse_args(argv)
    encoder, test_x, test_y, train_x = load_encoder_and_digits(args)
    names = args.sets or sorted(c.name for c in args.cells.iterdir() if (c / "result.json").exists()
                                and c.name != "encoder")
    rows = ["| set | correct %: transformer | correct %: after the search | loss: transformer | "
            "loss: after the search |", "|---|---|---|---|---|"]
    for name in names:
        res = json.loads((args.cells / name / "s0" / "result.json").read_text())
        kind, digit = coloc_set_name(name)
        s = make_coloc_set(test_x, test_y, digit, kind=kind, n=len(res["boxes"]), seed=0, clutter_pool=train_x)
        start = box_params(torch.tensor(res["boxes"], dtype=torch.float32))
        found = search(encoder, s.images, start, args.sweeps, args.grid_px)
        ok = [float((box_iou(attended_box("attention", w, (SIZE, SIZE)), s.boxes) > 0.5).float().mean()) * 100
              for w in (start, found)]
        losses = [loss_at(encoder, s.images, w, args.draws, seed=1) for w in (start, found)]
        rows.append(f"| {name} | {ok[0]:.0f} | {ok[1]:.0f} | {losses[0]:.3f} | {losses[1]:.3f} |")
        print(rows[-1], flush=True)
        atomic_write_text(args.out, "# A search over windows from the transformer's, lowering the same loss "
                          "(`scripts/analysis/coloc_search_windows.py`)\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
