"""Were the Table 1 transformers alive at the end of training? One row per finished ST cell of results/table1.

For each cell's final checkpoint (``cells/<key>/s0/checkpoints/last.ckpt``, kept on the machine that ran it, not in
git), on 500 test images of the cell's dataset: how many units of the localisation net's last hidden layer are dead
(zero for every image) and the std over the images of the predicted transformation parameters (0: one fixed warp
for all). The R and RTS cells ran before training logged ``val/st_frozen``; this checks them after the fact.
Output: ``alive.md`` beside this file.

    STNKIT_DATA=/path/to/mnist .venv/bin/python results/table1/loc-lr-x3-tc/check_alive.py
"""

import json
from pathlib import Path

import torch

from stnkit.data import distort, find_mnist, load_mnist
from stnkit.modules import SpatialTransformer
from stnkit.training import load_checkpoint

HERE = Path(__file__).parent
torch.set_num_threads(1)
x, y = load_mnist(find_mnist(download=False), "test")
images = {}
rows = ["| cell | loc lr x | dead units of the last hidden layer | parameter std over images | error % (500 images) |",
        "|---|---|---|---|---|"]
cells = [HERE.parent / "cells" / d for d in sorted(p.name for p in (HERE.parent / "cells").iterdir())]
cells += sorted((HERE / "cells").iterdir())
for cell in cells:
    result_path = cell / "result.json"
    ckpt = cell / "s0" / "checkpoints" / "last.ckpt"
    if not result_path.exists() or not ckpt.exists() or "-st-" not in cell.name:
        continue
    result = json.loads(result_path.read_text())
    d = result["dataset"]
    if d not in images:
        images[d] = distort(d, x[:500], torch.arange(500), split="test").images
    lit, _, _ = load_checkpoint(ckpt)
    model = lit.model.eval()
    st = next(m for m in model.modules() if isinstance(m, SpatialTransformer))
    with torch.no_grad():
        err = float((model(images[d]).argmax(1) != y[:500]).float().mean()) * 100
        features = st.localization(images[d]).flatten(1)  # (500, F): what the regression head sees
        params = st.head(features)  # (500, P)
    dead = int((features.amax(0) <= 0).sum())
    where = "" if cell.parent.parent == HERE.parent else " (x3 run, `cells/`)"
    rows.append(f"| {cell.name}{where} | {lit.hparams['loc_lr_scale']:g} | {dead} of {features.shape[1]} | "
                f"{float(params.std(0).mean()):.4f} | {err:.1f} |")
    print(rows[-1], flush=True)
text = ("# Table 1 transformers at the end of training: alive or dead\n\n" + "\n".join(rows) + "\n\n"
        "Dead: every unit of the last hidden layer zero for every image, so the transformer is one fixed warp "
        "(parameter std 0).\n")
(HERE / "alive.md").write_text(text)
