"""3-D MNIST (Jaderberg et al. 2015, App. A.3): a 3-D affine transformer learns a 2-D projection of a volume.

Data: an MNIST digit extruded into a 4-voxel slab, rotated (tilts up to +-60 deg about x and y, +-45 deg in plane)
and placed at random in a 60x60x60 volume (:class:`stnkit.data.MNIST3D`). Cells: ``st-cnn-mnist3d`` (an
``"affine3d"`` transformer resamples the volume to 28^3, the output is summed over depth and a 2-D CNN classifies
the projection; trained with class labels only) and ``cnn-mnist3d``, the same network without the transformer
(the volume projected along its fixed depth axis). The paper shows this experiment qualitatively; we report test
error of both and draw the learned projections beside the fixed ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from stnkit.reproduce.experiment import Budget, Cell, Experiment, budget_recipe
from stnkit.reproduce.results import fmt, markdown_table, recipe_text, trained_model

__all__ = ["EXPERIMENT", "projection_panels", "render_markdown"]

NAME = "mnist3d"
CELLS = (
    Cell("cnn-mnist3d", "fixed projection + CNN (no transformer)", {"dataset": NAME, "model": "cnn-mnist3d"}),
    Cell("st-cnn-mnist3d", "3-D ST + learned projection + CNN", {"dataset": NAME, "model": "st-cnn-mnist3d",
                                                                "transform": "affine3d"}),
)

#: ``cpu-2.5k``: the fast CPU recipe, 2,500 steps of batch 32 per cell, localisation lr x1 (measured times and why:
#: ``results/mnist3d/NOTES.md``); ``paper``: App. A.4's SGD recipe, 150k iterations, 3 seeds.
BUDGETS = (
    Budget("smoke", {"recipe": "smoke", "steps": 4, "eval_every": 2, "batch_size": 8, "train_subset": 64,
                     "val_subset": 16, "test_subset": 32, "val_size": 16}),
    Budget("cpu-2.5k", {"recipe": "cpu", "steps": 2500, "batch_size": 32, "eval_every": 500, "val_subset": 2000,
                        "test_subset": 5000, "channels_last": False,  # one memory format for both (not for Conv3d)
                        "loc_lr_scale": 1.0}, aliases=("cpu",)),
    Budget("paper", {"recipe": "paper"}, seeds=3),
)


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    return {"recipe": budget_recipe(budget.fields)}


def render_markdown(table: dict[str, Any]) -> str:
    """Render the two models' test errors and whether the transformer helps."""
    r = table["recipe"]
    lines = ["# 3-D MNIST reproduction (App. A.3): a learned projection of a posed volume\n"]
    lines.append(
        f"{recipe_text(table['budget'], r)}, {r['steps']} iterations per cell, localisation lr "
        f"x{r['loc_lr_scale']:g}. Volumes 60^3: an MNIST digit extruded to a "
        "4-voxel slab, tilted up to +-60 deg about x and y and +-45 deg in plane, placed at random. The paper "
        "reports this experiment qualitatively (no numbers): the transformer learns to orient and project the "
        "volume so the 2-D classifier can read the digit.\n")
    by_key = {c["key"]: c for c in table["cells"]}
    rows = []
    for c in CELLS:
        res = by_key.get(c.key)
        rows.append([c.label, f"**{fmt(res['error'])}**" if res else "not run", "qualitative only",
                     f"{res['params']:,}" if res else "—", f"{res['train_s'] / 60:.1f} min" if res else "—",
                     (res or {}).get("st_health") or "—"])
    lines.append(markdown_table(["model", "test error %", "paper", "params", "training",
                                 "localisation net at the end"], rows))
    st, base = by_key.get("st-cnn-mnist3d"), by_key.get("cnn-mnist3d")
    if st and base:
        verdict = "yes" if st["error"] < base["error"] else "NO"
        lines.append(f"Does the 3-D transformer beat the fixed projection? **{verdict}** ({st['error']:.2f} % vs "
                     f"{base['error']:.2f} %). Figure: `fig_mnist3d.png` (fixed projection vs learned projection of "
                     "the same test volumes).\n")
    lines.append(f"Cells finished: {len(by_key)} of {len(CELLS)}.\n")
    return "\n".join(lines)


def projection_panels(model: Any, volumes: torch.Tensor, labels: torch.Tensor | None = None) -> list[list[Any]]:
    """Panels per test volume: its projection along the fixed depth axis, and the transformer's learned projection.

    Args:
        model: a :class:`~stnkit.models.mnist3d.ProjectionClassifier` with a transformer.
        volumes: inputs (N, 1, V, V, V).
        labels: optional labels (N,) for the titles.

    Returns:
        Two rows of :class:`stnkit.viz.Panel` (for :func:`stnkit.viz.panel_figure`): fixed, then learned.
    """
    from stnkit.viz import Panel

    model.eval()
    with torch.no_grad():
        learned = model.project(volumes)  # (N, 1, H_out, W_out)
        preds = model(volumes).argmax(1)
    fixed = volumes.sum(dim=2)  # (N, 1, V, V): what a network without the transformer sees (before resampling)
    rows: list[list[Any]] = [[], []]
    for i in range(volumes.shape[0]):
        ok = labels is None or int(preds[i]) == int(labels[i])
        rows[0].append(Panel(fixed[i] / fixed[i].amax().clamp_min(1e-6),
                             title=f"label {int(labels[i])}" if labels is not None else ""))
        rows[1].append(Panel(learned[i] / learned[i].amax().clamp_min(1e-6),
                             title=f"pred {int(preds[i])}" if labels is not None else "",
                             title_color="black" if ok else "tab:red"))
    rows[0][0] = replace(rows[0][0], ylabel="fixed (depth sum)")
    rows[1][0] = replace(rows[1][0], ylabel="learned (3-D ST)")
    return rows


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None, n: int = 8) -> None:
    loaded = trained_model(out, "st-cnn-mnist3d") if "st-cnn-mnist3d" in finished else None
    if loaded is None:
        return
    from stnkit.viz import load_test_images, panel_figure

    volumes, labels = load_test_images(loaded[1], n, data_dir)
    panel_figure(projection_panels(loaded[0], volumes, labels), "3-D MNIST: projection along the volume's depth "
                 "axis vs the 3-D transformer's learned projection").savefig(out / "fig_mnist3d.png", dpi=90)


EXPERIMENT = Experiment(
    name=NAME, title="App. A.3: 3-D MNIST, a 3-D transformer + projection vs a fixed projection", cells=CELLS,
    budgets=BUDGETS, default_budget="cpu-2.5k", render=render_markdown, describe=_describe, figures=_figures,
)
