"""Why the first long RTS ST-CNN (localisation lr x3) ended behind the CNN: its localisation net died.

For each history snapshot of the run (``rts-st-cnn-affine/s0/checkpoints/history``, kept on the machine that ran
it, not in git) this prints, on 500 RTS test images: the error, how many of the localisation net's last hidden
units are dead (zero for every image), and the std over the images of the predicted theta (0: one fixed warp for
all). Output: ``diagnosis.md`` beside this file, and ``curves.png``: this run's validation curve beside the rerun
with localisation lr x1 (``../cells/rts-st-cnn-affine``) and the CNN.

    STNKIT_DATA=/path/to/mnist .venv/bin/python results/table1-long/loc-lr-x3/diagnose.py
"""

import json
from pathlib import Path

import torch

from stnkit.data import distort, find_mnist, load_mnist
from stnkit.modules import SpatialTransformer
from stnkit.reproduce.results import val_curve
from stnkit.training import load_checkpoint
from stnkit.viz import error_curves

HERE = Path(__file__).parent
torch.set_num_threads(1)
x, y = load_mnist(find_mnist(download=False), "test")
images = distort("rts", x[:500], torch.arange(500), split="test").images
rows = ["| step | error % (500 test images) | dead units of the last hidden layer | theta std over images |",
        "|---|---|---|---|"]
for ckpt in sorted((HERE / "rts-st-cnn-affine/s0/checkpoints/history").glob("step-*.ckpt")):
    lit, _, _ = load_checkpoint(ckpt)
    model = lit.model.eval()
    st = next(m for m in model.modules() if isinstance(m, SpatialTransformer))
    with torch.no_grad():
        err = float((model(images).argmax(1) != y[:500]).float().mean()) * 100
        features = st.localization(images).flatten(1)  # (500, F): what the regression head sees
        theta = st.head(features)  # (500, 6)
    dead = int((features.amax(0) <= 0).sum())
    rows.append(f"| {int(ckpt.stem.split('-')[1])} | {err:.1f} | {dead} of {features.shape[1]} | "
                f"{float(theta.std(0).mean()):.4f} |")
text = ("# Long RTS ST-CNN, localisation lr x3: the localisation net over training\n\n" + "\n".join(rows) + "\n\n"
        "Step 0: the regression layer starts at zero weights (the identity for every image), so theta does not vary "
        "yet although the features do. From step 7,000 every unit is dead: the transformer is one fixed warp.\n")
(HERE / "diagnosis.md").write_text(text)
print(text)

runs = [("ST-CNN affine, localisation lr x3 (died at 6-7k)", HERE / "rts-st-cnn-affine"),
        ("ST-CNN affine, localisation lr x1", HERE.parent / "cells" / "rts-st-cnn-affine"),
        ("CNN (curve before 11k lost on resume)", HERE.parent / "cells" / "rts-cnn")]
series = []
for label, cell in runs:
    result = json.loads((cell / "result.json").read_text())
    series.append({"label": label, "curve": val_curve(cell / "s0"), "test_err": result["error"]})
fig = error_curves(series, "RTS, 15k steps: the localisation lr decides whether the transformer survives")
fig.savefig(HERE / "curves.png", dpi=90)
