"""Were the Table 1 transformers alive at the end of training? One row per finished ST cell of Table 1 runs.

For each ST cell's final checkpoint (``<cells>/<key>/s0/checkpoints/last.ckpt``, kept on the machine that ran
it, not in git), on 500 test images of the dataset it was trained on: how many units of the localisation net's
last hidden layer are dead (zero for every image), the std over the images of the predicted transformation
parameters (0: one fixed warp for all) and, for affine cells, the warp's mean scale (the attended window's side
over the input's) and the std of its translation (how far the window moves with the digit): training logs
``val/st_frozen`` on validation images; this reads the final checkpoint on test images. Cells of every folder after
the first are marked with their folder. Output: ``--out`` (default ``results/table1/loc-lr-x3-tc/alive.md``).

    STNKIT_DATA=/path/to/mnist python scripts/analysis/table1_check_alive.py
"""

import torch
from common import RESULTS, existing_dir, localization_state
from common import parser as make_parser

from stnkit.data import distort, find_mnist, load_mnist
from stnkit.files import atomic_write_text
from stnkit.training import load_checkpoint

HERE = RESULTS / "table1" / "loc-lr-x3-tc"


def main(argv: list[str] | None = None) -> None:
    """Check every finished ST cell with a checkpoint; write the md table."""
    p = make_parser(__doc__)
    p.add_argument("--cells", type=existing_dir, nargs="+", default=[RESULTS / "table1" / "cells", HERE / "cells"],
                   help="Table 1 cells folders (default: results/table1/cells and loc-lr-x3-tc/cells)")
    p.add_argument("--images", type=int, default=500, help="test images per dataset")
    p.add_argument("--out", default=HERE / "alive.md", help="markdown written")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x, y = load_mnist(find_mnist(args.data, download=False), "test")
    x, y = x[:args.images], y[:args.images]
    images = {}
    rows = [f"| cell | loc lr x | dead units of the last hidden layer | parameter std over images | mean scale "
            f"(affine) | translation std x / y (affine) | error % ({args.images} images) |",
            "|---|---|---|---|---|---|---|"]
    for i, folder in enumerate(args.cells):
        for cell in sorted(folder.iterdir()):
            ckpt = cell / "s0" / "checkpoints" / "last.ckpt"
            if not ckpt.exists() or "-st-" not in cell.name:
                continue
            lit, config, _ = load_checkpoint(ckpt)
            d = config.dataset
            if d not in images:
                images[d] = distort(d, x, torch.arange(len(x)), split="test").images
            state = localization_state(lit.model.eval(), images[d], y)
            where = f" (`{folder.parent.name}/{folder.name}`)" if i else ""
            scale, shift = "-", "-"
            if "scale" in state:
                scale, shift = f"{state['scale']:.2f}", f"{state['shift_std_x']:.2f} / {state['shift_std_y']:.2f}"
            rows.append(f"| {cell.name}{where} | {lit.recipe.loc_lr_scale:g} | {state['dead']} of "
                        f"{state['units']} | {state['param_std']:.4f} | {scale} | {shift} | {state['error']:.1f} |")
            print(rows[-1], flush=True)
    atomic_write_text(args.out, "# Table 1 transformers at the end of training: alive or dead\n\n" + "\n".join(rows)
                      + "\n\nDead: every unit of the last hidden layer zero for every image, so the transformer is "
                      "one fixed warp (parameter std 0). Scale 1: the transformer sees the whole input; 0.5: a "
                      "window of half its side. Translation std 0: the window does not move with the digit.\n")


if __name__ == "__main__":
    main()
