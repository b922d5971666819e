"""Unsupervised registration of MNIST digits (VoxelMorph's MNIST tutorial setting), parametric and dense.

Pairs (moving, fixed) are two different digits of the same class (:func:`stnkit.reproduce.regtrain.make_pairs`,
deterministic per seed and split), 28x28 zero-padded to 32x32 so the U-Net's two poolings divide the size. Cells:
``affine`` (a small CNN regressing affine parameters, identity-initialised, :class:`stnkit.SpatialTransformer`),
``dense`` (a 3-level U-Net predicting a displacement, :class:`stnkit.fields.DenseSpatialTransformer`),
``diffeomorphic`` (the same net predicting a velocity, integrated in 7 scaling-and-squaring steps),
``affine-dense`` (:class:`stnkit.fields.AffineDenseCascade`, sampling the moving image once) and the peer row
``voxelmorph`` (VoxelMorph's own ``VxmPairwise``, same widths, ``integration_steps=0`` as in its tutorial; skipped
with a one-line reason where voxelmorph is not importable). 3-D: ``affine-3d`` and ``dense-3d`` on volumes of
2x-downsampled digits posed in V^3 (:func:`stnkit.data.mnist3d.render_volumes`), plus ``affine-dense-3d``: the
moving volume at a random pose, the fixed one at the canonical pose. Loss: ``similarity + lam *
gradient_loss(d)`` (similarity ``mse`` in 2-D, ``nmse`` in 3-D: :func:`stnkit.reproduce.regtrain.similarity_loss`),
``d`` the dense part of the displacement in voxels (none for ``affine``). Metrics on held-out
test pairs: Dice of the digit masks (pixels above 0.5 of the image's maximum) and MSE, before and after; % folding
pixels (Jacobian determinant <= 0); forward milliseconds per pair at the stated batch.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from stnkit.reproduce import regtrain
from stnkit.reproduce.experiment import Budget, Cell, Experiment, SeedRun
from stnkit.reproduce.results import fmt, markdown_table

__all__ = ["EXPERIMENT", "pair_row", "render_markdown"]

NAME = "registration"
METRICS = ("dice_before", "dice_after", "mse_before", "mse_after", "folding", "ms_per_pair", "train_s",
           "final_loss")

CELLS = (
    Cell("affine", "affine (CNN + affine ST)", {"model": "affine", "dims": 2}),
    Cell("dense", "dense (U-Net displacement)", {"model": "dense", "dims": 2}),
    Cell("diffeomorphic", "diffeomorphic (U-Net velocity, 7 steps)", {"model": "diffeomorphic", "dims": 2}),
    Cell("affine-dense", "affine + dense (cascade, one sampling)", {"model": "affine-dense", "dims": 2}),
    Cell("voxelmorph", "peer: VoxelMorph VxmPairwise", {"model": "voxelmorph", "dims": 2}),
    Cell("affine-3d", "3-D affine (CNN + affine3d ST)", {"model": "affine", "dims": 3}),
    Cell("dense-3d", "3-D dense (U-Net displacement)", {"model": "dense", "dims": 3}),
    Cell("affine-dense-3d", "3-D affine + dense (cascade, one sampling)", {"model": "affine-dense", "dims": 3}),
)

#: Every cell: Adam, lr 1e-3, lam 0.05 (VoxelMorph's MNIST tutorial weight, voxel units), pairs drawn from the first
#: ``train_images`` / ``test_images`` digits of MNIST's train / test split. ``cpu-600``: 600 steps of batch 32
#: (2-D), 300 steps of batch 8 (3-D, 24^3 volumes); whole run on 2 cores: see ``results/registration/NOTES.md``.
#: ``paper``: VoxelMorph's tutorial length (far more steps), 3 seeds. 3-D (``_3D``, chosen by 300-step one-thread
#: probes, NOTES.md): the fixed volume at the canonical pose and the moving one rotated up to 30 deg about each
#: axis (two random poses left the affine model nothing to recover: Dice 0.047 -> 0.000); slabs 8 voxels thick
#: (4: affine Dice 0.30, 8: 0.37); similarity ``nmse`` (plain MSE is lowered by emptying the mostly empty volume:
#: affine 0.09 -> 0.09 at 4 voxels, nmse 0.28; ``lncc`` 0.31 but 60x slower); lam 2.0 for nmse's ~100x larger
#: scale (0.05: dense folding 5.9 %, 2.0: 1.3 %); affine parameters bounded to 1.0 around the identity (enough
#: for the poses; 0.30 vs 0.28 unbounded); the affine lr stays 1e-3 (3e-4: Dice 0.11 after 300 steps).
_COMMON = {"digits": "mnist", "lr": 1e-3, "lam": 0.05, "eval_batch": 64, "features": (16, 32, 32),
           "volume_size": 24, "thickness": 8, "rotation": (30.0, 30.0, 30.0), "peer_module": "voxelmorph"}
_3D = {"fixed_pose": "canonical", "similarity": "nmse", "lam": 2.0, "bound": 1.0}
BUDGETS = (
    Budget("smoke", {**_COMMON, "steps": 3, "batch_size": 4, "train_images": 200, "test_images": 100,
                     "train_pairs": 32, "test_pairs": 6, "features": (4, 8, 8), "checkpoint_every": 2},
           {"*-3d": {**_3D, "volume_size": 16, "batch_size": 2, "test_pairs": 3}}),
    Budget("cpu-600", {**_COMMON, "steps": 600, "batch_size": 32, "train_images": 10000, "test_images": 2000,
                       "train_pairs": 10000, "test_pairs": 500, "checkpoint_every": 200},
           {"*-3d": {**_3D, "steps": 300, "batch_size": 8, "features": (8, 16, 16), "train_images": 2000,
                     "test_images": 500, "train_pairs": 2000, "test_pairs": 100}}),
    Budget("paper", {**_COMMON, "steps": 10000, "batch_size": 32, "train_images": 60000, "test_images": 10000,
                     "train_pairs": 60000, "test_pairs": 2000, "checkpoint_every": 500},
           {"*-3d": {**_3D, "steps": 5000, "batch_size": 8, "volume_size": 32, "train_images": 10000,
                     "test_images": 2000, "train_pairs": 10000, "test_pairs": 500}}, seeds=3),
)


def register(run: SeedRun) -> dict[str, Any]:
    """Train and evaluate one seed of one model (:func:`stnkit.reproduce.regtrain.register_seed`)."""
    return regtrain.register_seed(run.fields, run.seed, run.run_dir, run.data_dir, run.progress)


def summarize(cell: Cell, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the seeds' metrics; a skipped peer row keeps its reason."""
    if "skipped" in seeds[0]:
        return {**cell.fields, "skipped": seeds[0]["skipped"]}
    first = seeds[0]
    return {**cell.fields, **{k: statistics.fmean(r[k] for r in seeds) for k in METRICS},
            "dice_afters": [r["dice_after"] for r in seeds],
            **{k: first[k] for k in ("steps", "batch_size", "lr", "lam", "params", "eval_batch", "test_pairs",
                                     "train_pairs")}}


def headline(result: dict[str, Any]) -> str:
    """``Dice 0.61 -> 0.83, MSE 0.081 -> 0.020, folding 0.1 %, 1.3 ms/pair`` (or the skip reason)."""
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    return (f"Dice {result['dice_before']:.2f} -> {result['dice_after']:.2f}, MSE {result['mse_before']:.3f} -> "
            f"{result['mse_after']:.3f}, folding {result['folding']:.2f} %, {result['ms_per_pair']:.2f} ms/pair")


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    two, three = budget.fields_for(CELLS[0]), budget.fields_for(CELLS[-1])
    keys = ("steps", "batch_size", "lr", "lam", "features", "train_pairs", "test_pairs", "digits")
    keys_3d = (*keys, "volume_size", "thickness", "rotation", "fixed_pose", "similarity", "bound")
    return {"setting": {k: two[k] for k in keys}, "setting_3d": {k: three[k] for k in keys_3d},
            "mask_threshold": regtrain.MASK_THRESHOLD, "pad": regtrain.PAD}


def render_markdown(table: dict[str, Any]) -> str:
    """Render Dice/MSE before and after, folding and runtime per model, the peer row among them."""
    s, s3 = table["setting"], table["setting_3d"]
    lines = [
        "# Unsupervised registration of MNIST digits (VoxelMorph's MNIST tutorial setting)\n",
        f"Budget **{table['budget']}**. Pairs: two different digits of the same class ({s['train_pairs']} training "
        f"pairs, {s['test_pairs']} held-out test pairs from the test split; digits: {s['digits']}), 28x28 padded to "
        f"32x32. Training: Adam lr {s['lr']}, {s['steps']} steps of batch {s['batch_size']}; loss MSE + "
        f"{s['lam']} x gradient loss of the dense displacement in pixels; U-Net widths {list(s['features'])}. "
        f"3-D: volumes {s3['volume_size']}^3 of 2x-downsampled digits extruded to {s3['thickness']} voxels; the "
        f"moving one rotated up to {list(s3['rotation'])} deg and shifted inside the volume, the fixed one at the "
        f"{s3['fixed_pose']} pose; loss {s3['similarity']} + {s3['lam']} x gradient loss, affine parameters "
        f"within {s3['bound']} of the identity; {s3['steps']} steps of batch {s3['batch_size']}, widths "
        f"{list(s3['features'])}, {s3['test_pairs']} test pairs. Dice: masks above {table['mask_threshold']} of "
        "each image's maximum, moving (before) or warped (after) vs fixed. Folding: % of pixels whose Jacobian "
        "determinant is <= 0. Runtime: forward pass per pair at the evaluation batch, after a warm-up, CPU.\n",
    ]
    by_key = {c["key"]: c for c in table["cells"]}
    rows = []
    for c in CELLS:
        res = by_key.get(c.key)
        if res is None:
            rows.append([c.label, f"{c.fields['dims']}-D", "not run", "", "", "", "", "", "", ""])
        elif "skipped" in res:
            rows.append([c.label, f"{c.fields['dims']}-D", f"skipped: {res['skipped']}", "", "", "", "", "", "", ""])
        else:
            rows.append([c.label, f"{res['dims']}-D", fmt(res["dice_before"], 3), f"**{fmt(res['dice_after'], 3)}**",
                         fmt(res["mse_before"], 4), f"**{fmt(res['mse_after'], 4)}**", fmt(res["folding"], 2),
                         f"{fmt(res['ms_per_pair'], 2)} (batch {res['eval_batch']})", f"{res['params']:,}",
                         f"{res['train_s'] / 60:.1f} min"])
    lines.append(markdown_table(["model", "dims", "Dice before", "Dice after", "MSE before", "MSE after",
                                 "folding %", "ms / pair", "params", "training"], rows))
    lines.append(f"Cells finished: {len(by_key)} of {len(CELLS)}. Figures: `fig_registration.png` (2-D) and "
                 "`fig_registration_3d.png` (3-D: maximum projections along depth, the grid and determinant of "
                 "the middle slice): one test pair per model, moving / fixed / warped, the deformed grid (where "
                 "each output pixel samples the moving image) and the Jacobian determinant (blue < 1 < red, black "
                 "folded).\n")
    return "\n".join(lines)


def pair_row(pair: dict[str, torch.Tensor], label: str, index: int = 0) -> list[Any]:
    """One figure row from a seed's ``figure_pairs.pt``: 2-D as it is, 3-D as projections and the middle slice.

    Args:
        pair: ``moving``, ``fixed``, ``warped`` (N, 1, *spatial) and ``displacement`` (N, d, *spatial),
            normalised, (x, y[, z]) order.
        label: row label.
        index: which pair.

    Returns:
        Panels (:func:`stnkit.viz.registration_panels`).
    """
    from stnkit.fields import displacement_to_grid, jacobian_determinant
    from stnkit.grid import denormalize_points
    from stnkit.viz import registration_panels

    d = pair["displacement"][index : index + 1].float()  # (1, dims, *spatial)
    det = jacobian_determinant(d)[0]  # (*spatial)
    grid = displacement_to_grid(d)[0]  # (*spatial, dims)
    images = [pair[k][index] for k in ("moving", "fixed", "warped")]  # (1, *spatial) each
    if d.shape[1] == 3:
        mid = d.shape[2] // 2
        images = [im.amax(1) for im in images]  # (1, H, W): maximum projection along depth
        det, grid = det[mid], grid[mid, ..., :2]  # middle slice, its in-plane (x, y)
    size = tuple(images[0].shape[1:])
    moving, fixed, warped = images
    return registration_panels(moving, fixed, warped, denormalize_points(grid, size), det, label)


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None) -> None:
    from stnkit.viz import panel_figure

    for dims, path in ((2, "fig_registration.png"), (3, "fig_registration_3d.png")):
        rows = []
        for c in CELLS:
            pairs = out / "cells" / c.key / "s0" / "figure_pairs.pt"
            if c.fields["dims"] == dims and c.key in finished and pairs.exists():
                rows.append(pair_row(torch.load(pairs, weights_only=True), c.key))
        if rows:
            panel_figure(rows, f"{dims}-D registration, one test pair per model", size=(1.5, 1.6)).savefig(
                out / path, dpi=100)


EXPERIMENT = Experiment(
    name=NAME, title="unsupervised MNIST registration: affine, dense, diffeomorphic, affine+dense, VoxelMorph peer",
    cells=CELLS, budgets=BUDGETS, default_budget="cpu-600", render=render_markdown, run_seed=register,
    summarize=summarize, headline=headline, describe=_describe, figures=_figures,
)
