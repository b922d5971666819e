"""Is the localisation net what stops the co-localisation windows short? Optimise one free window per image instead.

Same set (seed 0), frozen encoder (``<cells>/encoder``), triplet hinge loss (margin 1), random negatives, full-batch
Adam, steps, set size and window schedule (``stnkit.reproduce.coloc.WINDOW``: from the whole image, scale held
within the band below an upper bound moving 1 -> 0.38 over the first half) as the coloc cells of ``--budget``, but
the windows are N x 3 free parameters, one window per image, instead of a localisation net's outputs. With
``--blur S`` the images are Gaussian-blurred with a sigma falling linearly from S px to 0 over the first 60 % of the
steps (coarse-to-fine, as in image registration). Prints the % correct (IoU > 0.5) every 100 steps and at the last
step; the last line per set is appended to ``--out``. Needs the encoder's checkpoint (not committed:
``results/coloc/diagnosis/README.md``).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/coloc_free_windows.py t-5 t-1 [--blur 6]
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, add_coloc_arguments, coloc_set_name, load_encoder_and_digits
from common import parser as make_parser

from stnkit.data import make_coloc_set
from stnkit.data.coloc import random_crop_params
from stnkit.losses import attended_box, box_iou, triplet_hinge_loss
from stnkit.reproduce.coloc import EXPERIMENT, WINDOW
from stnkit.sampling import warp

SIZE, CROP = 84, 28
RULE = "|---|---|---|---|---|---|\n"


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of images (N, 1, H, W) with ``sigma`` px (none below 0.3)."""
    if sigma < 0.3:
        return x
    r = int(3 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))


def windows(z: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """Attention parameters (N, 3) of the free windows under the cells' scale schedule (inside the image)."""
    f = min(1.0, step / (WINDOW["anneal"] * steps))
    hi = WINDOW["start_max_scale"] + (WINDOW["final_max_scale"] - WINDOW["start_max_scale"]) * f
    lo = max(WINDOW["scale_range"][0], hi - WINDOW["band"])
    s = lo + (hi - lo) * torch.sigmoid(z[:, :1] + 3.0)
    return torch.cat([s, (1 - s) * torch.tanh(z[:, 1:])], dim=1)


def main(argv: list[str] | None = None) -> None:
    """Optimise the free windows of each set named on the command line; append the results to the md."""
    p = make_parser(__doc__)
    p.add_argument("sets", nargs="+", help="coloc set keys: t-5, tc-1, ...")
    p.add_argument("--blur", type=float, default=0.0, help="blur sigma (px) at step 0")
    p.add_argument("--budget", default="cpu-1k", help="coloc budget giving steps, lr and set size")
    add_coloc_arguments(p)
    p.add_argument("--out", type=Path, default=RESULTS / "coloc" / "diagnosis" / "free_windows.md",
                   help="markdown table appended to")
    args = p.parse_args(argv)
    encoder, test_x, test_y, train_x = load_encoder_and_digits(args)
    budget = EXPERIMENT.budget(args.budget).fields_for(EXPERIMENT.cells[0])
    steps, n = budget["steps"], budget["n"]
    lines = []
    for name in args.sets:
        kind, digit = coloc_set_name(name)
        s = make_coloc_set(test_x, test_y, digit, kind=kind, n=n, seed=0, clutter_pool=train_x)
        z = torch.zeros(n, 3, requires_grad=True)
        opt = torch.optim.Adam([z], lr=budget["lr"])
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        for step in range(steps):
            x = blur(s.images, args.blur * max(0.0, 1 - step / (0.6 * steps)))
            crops = encoder(warp(x, windows(z, step, steps), "attention", (CROP, CROP)))
            with torch.no_grad():
                rand = encoder(warp(x, random_crop_params(n, CROP, SIZE, g), "attention", (CROP, CROP)))
            loss = triplet_hinge_loss(crops, rand, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 100 == 0 or step + 1 == steps:
                with torch.no_grad():
                    iou = box_iou(attended_box("attention", windows(z, step, steps), (SIZE, SIZE)), s.boxes)
                line = (f"| {name} | {args.blur:g} | {step + 1} | {loss.item():.3f} | "
                        f"{(iou > 0.5).float().mean() * 100:.0f} | {iou.mean():.3f} |")
                print(line, f"{time.time() - t0:.0f} s", flush=True)
        lines.append(line)
    head = ("# Free per-image windows (`scripts/analysis/coloc_free_windows.py`)\n\n| set | blur sigma at step 0 (px) "
            "| steps | last loss | correct % | mean IoU |\n" + RULE)
    old = args.out.read_text().split(RULE, 1)[1] if args.out.exists() else ""
    args.out.write_text(head + old + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
