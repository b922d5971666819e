"""Helpers shared by the analysis scripts of this folder (imported as ``common``: each script's own folder).

Paths default to the repository's ``results/``; MNIST is found by :func:`stnkit.data.find_mnist` (``--data``, else
``$STNKIT_DATA``), never downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stnkit.data import find_mnist, load_mnist
from stnkit.data.coloc import random_crop_params
from stnkit.losses import attended_box, triplet_hinge_loss
from stnkit.models.coloc import CNNEmbedding
from stnkit.modules import SpatialTransformer
from stnkit.sampling import warp
from stnkit.training import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
COLOC_SIZE = (84, 84)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser showing the script's docstring, with ``--data`` (the MNIST IDX folder)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MNIST IDX folder (default: $STNKIT_DATA)")
    return p


def existing_dir(path: str) -> Path:
    """``argparse`` type: a folder that exists (one clear error otherwise)."""
    p = Path(path)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"expected an existing folder, got {path!r}")
    return p


def coloc_set_name(name: str) -> tuple[str, int]:
    """``("tc", 1)`` from a co-localisation cell key ``tc-1`` or ``tc-1-heatmap``."""
    kind, digit = name.split("-")[:2]
    return kind, int(digit)


def add_coloc_arguments(p: argparse.ArgumentParser) -> None:
    """``--cells`` (a coloc run's cells folder) and ``--encoder`` (the frozen encoder's run folder)."""
    p.add_argument("--cells", type=existing_dir, default=RESULTS / "coloc" / "cells",
                   help="a coloc run's cells folder (default: results/coloc/cells)")
    p.add_argument("--encoder", type=existing_dir, default=None,
                   help="the encoder's run folder, holding checkpoints/ (default: <cells>/encoder/s0)")


def load_encoder_and_digits(args: argparse.Namespace) -> tuple[CNNEmbedding, torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
    """The frozen embedding of ``args.encoder`` and MNIST's (``args.data``) test digits, labels and training digits."""
    torch.set_num_threads(1)
    encoder = args.encoder or args.cells / "encoder" / "s0"
    if not (encoder / "checkpoints").is_dir():
        raise SystemExit(f"no encoder checkpoint in {encoder}/checkpoints: it is not committed; recreate it as "
                         "results/coloc/diagnosis/README.md says and pass --encoder")
    lit, _, _ = load_checkpoint(encoder)
    root = find_mnist(args.data, download=False)
    test_x, test_y = load_mnist(root, "test")
    train_x, _ = load_mnist(root, "train")
    return CNNEmbedding(lit.model), test_x, test_y, train_x


def box_params(boxes: torch.Tensor) -> torch.Tensor:
    """Attention parameters (N, 3) whose attended boxes (84 x 84 images) are ``boxes`` (N, 4), pixel x0 y0 x1 y1."""
    ref = attended_box("attention", torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 0.2, 0.0]]), COLOC_SIZE)
    width_per_s = ((ref[0, 2] - ref[0, 0]) - (ref[1, 2] - ref[1, 0])) / 0.5
    width_at_0 = (ref[0, 2] - ref[0, 0]) - width_per_s
    centre_per_t = ((ref[2, 0] + ref[2, 2]) - (ref[1, 0] + ref[1, 2])) / 2 / 0.2
    centre_at_0 = (ref[1, 0] + ref[1, 2]) / 2
    s = (boxes[:, 2] - boxes[:, 0] - width_at_0) / width_per_s
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack([s, (cx - centre_at_0) / centre_per_t, (cy - centre_at_0) / centre_per_t], dim=1)


def loss_at(encoder: torch.nn.Module, x: torch.Tensor, params: torch.Tensor, draws: int = 30, seed: int = 0) -> float:
    """The triplet loss (margin 1) of the windows ``params`` (N, 3), averaged over ``draws`` draws of negatives."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        e = encoder(warp(x, params, "attention", (28, 28)))
        return sum(float(triplet_hinge_loss(e, encoder(warp(x, random_crop_params(x.shape[0], 28, 84, g),
                                                                "attention", (28, 28))), 1.0))
                   for _ in range(draws)) / draws


def localization_state(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Error %, dead units of the localisation net's last hidden layer (zero on every image), what the warp does.

    Args:
        model: a classifier holding one :class:`~stnkit.modules.SpatialTransformer`.
        images: inputs (B, C, H, W).
        labels: classes (B,).

    Returns:
        ``error`` (%), ``dead`` and ``units`` (of the last hidden layer), ``param_std`` (the std over the images of
        the predicted transformation parameters, averaged over the parameters; 0: one fixed warp). For affine
        families also ``scale`` (mean over the images of sqrt|det A| of the output->source linear part: the side
        of the attended window over the input's side; 1: the whole input) and ``shift_std_x``/``shift_std_y``
        (std over the images of the translation, in normalised coordinates: how far the window moves).
    """
    st = next(m for m in model.modules() if isinstance(m, SpatialTransformer))
    with torch.no_grad():
        error = float((model(images).argmax(1) != labels).float().mean()) * 100
        features = st.localization(images).flatten(1)
        params = st.head(features)
    state = {"error": error, "dead": int((features.amax(0) <= 0).sum()), "units": features.shape[1],
             "param_std": float(params.std(0).mean())}
    if hasattr(st.transform, "affine_matrix"):
        theta = st.transform.affine_matrix(params)  # (B, 2, 3)
        state["scale"] = float(torch.linalg.det(theta[:, :, :2]).abs().sqrt().mean())
        state["shift_std_x"], state["shift_std_y"] = (float(v) for v in theta[:, :, 2].std(0))
    return state
