"""Co-localisation (Jaderberg et al. 2015, App. A.2): % of images whose attended box has IoU > 0.5, per digit.

For each digit class and each variant (T: a 28x28 digit at a random place in 84x84; TC: plus 16 random 6x6
clutter crops), test images of that class are given to an attention transformer trained only with the triplet
loss on embeddings of a frozen MNIST CNN (:mod:`stnkit.training.coloc`); no box is ever seen. Setup cell:
``encoder`` (the Table 1 CNN trained on plain MNIST through :func:`stnkit.training.fit`); cells ``t-0`` ... ``tc-9``
(the paper's localisation net) and ``t-0-heatmap`` ... ``tc-9-heatmap`` (the same window, loss and schedule,
placed by a score map's soft-argmax: :func:`stnkit.models.coloc.coloc_transformer`), each a set optimised by
:func:`stnkit.training.coloc.fit_coloc`, not by ``fit``. Figures: the boxes over optimisation steps (the paper's
Fig. 4), one per localisation net.
"""

from __future__ import annotations

import json
import statistics
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from stnkit.models.coloc import LOCALIZATIONS
from stnkit.reproduce.experiment import Budget, Cell, Experiment, SeedRun, fit_headline, fit_seed, fit_summary
from stnkit.reproduce.results import atomic_write_text, fmt, markdown_table

__all__ = ["EXPERIMENT", "WINDOW", "box_panels", "render_markdown"]

NAME = "coloc"
KINDS = ("t", "tc")
#: The paper: T 100 % for every digit; TC between 75 % and 93 % depending on the digit (per-digit values are in
#: its appendix table; the range is what PAPER.md records).
PAPER = {"t": (100.0, 100.0), "tc": (75.0, 93.0)}
HISTORY_IMAGES = 8  # images whose box trajectory is kept in the result (for the figure)


def _key(kind: str, digit: int, localization: str) -> str:
    """``tc-7`` (the paper's net) or ``tc-7-heatmap``."""
    return f"{kind}-{digit}" + ("" if localization == "paper" else f"-{localization}")


CELLS = tuple(Cell(_key(k, d, loc), f"{k.upper()} digit {d}", {"kind": k, "digit": d, "localization": loc},
                   list(PAPER[k])) for loc in LOCALIZATIONS for k in KINDS for d in range(10))
ENCODER = Cell("encoder", "encoder: the Table 1 CNN on plain MNIST", {"dataset": "plain", "model": "cnn"},
               seeds=1, run_seed=fit_seed, summarize=fit_summary)

#: The attention window's schedule (:class:`stnkit.training.coloc.ColocLitModule`): the window starts as the whole
#: image and zooms in, its scale held within 0.05 below an upper bound that moves from 1 to 0.38 over the first half
#: of the steps and then stays (why: ``results/coloc/NOTES.md``).
WINDOW: dict[str, Any] = {"scale_range": (0.25, 1.0), "init_scale": 0.975, "start_max_scale": 1.0, "band": 0.05,
                          "final_max_scale": 0.38, "anneal": 0.5}

#: Per budget: the encoder's TrainConfig fields, and each set's optimisation (full-batch Adam steps, lr, box
#: evaluations) and size. ``cpu-1k``: the encoder with the fast CPU recipe for 600 steps, then 1,000 steps per set
#: (about 4 hours for the 40 sets on the 2-core machine); ``paper``: App. A.4's encoder recipe, 2,000 steps, 3 seeds.
BUDGETS = (
    Budget("smoke", {}, {"encoder": {"recipe": "smoke", "steps": 4, "eval_every": 2, "train_subset": 256,
                                     "val_subset": 64, "test_subset": 128, "val_size": 64},
                         "t*": {"steps": 3, "eval_every": 1, "lr": 1e-2, "n": 8}}),
    Budget("cpu-1k", {}, {"encoder": {"recipe": "cpu", "steps": 600, "eval_every": 300},
                          "t*": {"steps": 1000, "eval_every": 100, "lr": 1e-2, "n": 100}}, aliases=("cpu",)),
    Budget("paper", {}, {"encoder": {"recipe": "paper"}, "t*": {"steps": 2000, "eval_every": 100, "lr": 1e-2,
                                                                 "n": 100}}, seeds=3),
)


@lru_cache(maxsize=1)
def _load(encoder_dir: str, data_dir: str | None) -> tuple[Any, tuple[torch.Tensor, ...]]:
    from stnkit.data import find_mnist, load_mnist
    from stnkit.training import load_checkpoint

    lit, _config, _ = load_checkpoint(encoder_dir)
    root = find_mnist(data_dir, download=False)
    test_x, test_y = load_mnist(root, split="test")
    train_x, _ = load_mnist(root, split="train")
    return lit.model, (test_x, test_y, train_x)


def colocalise(run: SeedRun) -> dict[str, Any]:
    """Co-localise one seed of one set with the setup cell's encoder; kept in ``run_dir/result.json`` (resume)."""
    done = run.run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    from stnkit.data import make_coloc_set
    from stnkit.training.coloc import fit_coloc

    encoder_dir = run.out / "cells" / ENCODER.key / "s0"
    encoder, (test_x, test_y, train_x) = _load(str(encoder_dir), run.data_dir)
    f, c = run.fields, run.cell.fields
    s = make_coloc_set(test_x, test_y, c["digit"], kind=c["kind"], n=f["n"], seed=run.seed, clutter_pool=train_x)
    result = fit_coloc(s, encoder, steps=f["steps"], eval_every=f["eval_every"], lr=f["lr"], seed=run.seed,
                       out=run.run_dir, progress=run.progress, localization=c["localization"], **WINDOW)
    result = {**result, "lr": f["lr"],
              "encoder_test_err": json.loads((encoder_dir / "metrics.json").read_text())["test_err"]}
    atomic_write_text(done, json.dumps(result) + "\n")
    return result


def summarize(cell: Cell, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the seeds' correct shares (IoU > 0.5); keep the first seed's per-image boxes for the figure."""
    first = seeds[0]
    return {
        **cell.fields, "correct": statistics.fmean(r["correct"] for r in seeds),
        "corrects": [r["correct"] for r in seeds], "iou": statistics.fmean(r["iou"] for r in seeds),
        "centre_hit": statistics.fmean(r["centre_hit"] for r in seeds), "n": len(first["ious"]),
        "steps": first["steps"], "lr": first["lr"], "train_s": round(sum(r["train_s"] for r in seeds), 1),
        "ious": first["ious"], "true_boxes": first["true_boxes"][:HISTORY_IMAGES],
        "boxes": first["boxes"][:HISTORY_IMAGES],
        "history": [{"step": h["step"], "params": h["params"][:HISTORY_IMAGES]} for h in first["history"]],
        "encoder_test_err": first["encoder_test_err"],
    }


def headline(result: dict[str, Any]) -> str:
    """``64 % correct (IoU > 0.5), mean IoU 0.52 (paper 75-93 %)`` (the encoder: its test error)."""
    if "correct" not in result:
        return fit_headline(result)
    lo, hi = result["paper"]
    return (f"{result['correct']:.0f} % correct (IoU > 0.5), mean IoU {result['iou']:.2f} (paper {lo:.0f}"
            + (f"-{hi:.0f}" if hi != lo else "") + " %)")


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    sets = budget.fields_for(CELLS[0])
    return {"steps": sets["steps"], "lr": sets["lr"], "n": sets["n"], "encoder": budget.cell_overrides(ENCODER.key),
            "window": {k: list(v) if isinstance(v, tuple) else v for k, v in WINDOW.items()}}


def render_markdown(table: dict[str, Any]) -> str:
    """Render the per-digit table (T and TC, ours beside the paper's)."""
    by_key = {c["key"]: c for c in table["cells"]}
    enc = next((c["encoder_test_err"] for c in table["cells"]), None)
    w = table.get("window", WINDOW)
    lines = [
        "# Co-localisation reproduction (App. A.2): % of images localised (IoU > 0.5)\n",
        f"Budget **{table['budget']}**: per digit class, {table['n']} test images; an attention transformer "
        f"(its window starts as the whole image and zooms in, its scale held within {w['band']} below an upper "
        f"bound moving from {w['start_max_scale']} to {w['final_max_scale']} over the first {w['anneal']:.0%} of "
        "the steps; see `stnkit.reproduce.coloc.WINDOW`; the paper's net keeps the window inside the image) "
        f"trained for {table['steps']} full-batch "
        f"Adam steps (lr {table['lr']}) with the triplet hinge loss (margin 1) on a frozen Table 1 CNN "
        f"(encoder recipe `{table['encoder']['recipe']}`"
        + (f", {enc:.2f} % MNIST test error" if enc is not None else "") + "; embedding: its three layers' "
        "activations, each scaled to unit length, concatenated). Correct: IoU of the attended box with the digit's "
        "28x28 frame > 0.5 (in brackets: mean IoU, and the % of boxes that contain the digit's centre). Paper: "
        "T 100 % for every digit, TC 75-93 % depending on the digit.\n",
        "Two localisation nets, everything else the same. **Paper's net**: conv 8@9x9 stride 4, max-pool, FC 8, FC "
        "8. **Heatmap**: a fully-convolutional score map on the image pooled to 42x42 (conv 5x5, max-pool, conv "
        "5x5, conv 1x1: 21x21 scores) whose soft-argmax is the window's centre "
        "(`stnkit.models.coloc.coloc_transformer(localization=\"heatmap\")`).\n",
    ]
    rows, means = [], ["mean"]
    for d in range(10):
        row = [str(d)]
        for kind in KINDS:
            for loc in LOCALIZATIONS:
                res = by_key.get(_key(kind, d, loc))
                row.append(f"**{res['correct']:.0f}** ({res['iou']:.2f}, {res.get('centre_hit', 0):.0f} %)" if res
                           else "not run")
            lo, hi = PAPER[kind]
            row.append(f"{lo:.0f}" if lo == hi else f"{lo:.0f}-{hi:.0f}")
        rows.append(row)
    for kind in KINDS:
        for loc in LOCALIZATIONS:
            done = [by_key[k] for k in (_key(kind, d, loc) for d in range(10)) if k in by_key]
            means.append(f"**{fmt(statistics.fmean(c['correct'] for c in done), 1)}**" if done else "—")
        means.append("100" if kind == "t" else "75-93")
    rows.append(means)
    header = ["digit"]
    for kind in KINDS:
        header += [f"{kind.upper()} ours, paper's net % (IoU, centre hit)", f"{kind.upper()} ours, heatmap %",
                   f"{kind.upper()} paper %"]
    lines.append(markdown_table(header, rows))
    lines.append(f"Cells finished: {len(by_key)} of {len(CELLS)}. Figures: `fig_coloc.png` (the paper's net) and "
                 "`fig_coloc_heatmap.png` (boxes over optimisation steps, early = light, late = dark; the true frame "
                 "dashed).\n")
    return "\n".join(lines)


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None) -> None:
    from stnkit.data import find_mnist, load_mnist, make_coloc_set
    from stnkit.viz import panel_figure

    root = find_mnist(data_dir, download=False)
    test_x, test_y = load_mnist(root, split="test")
    train_x, _ = load_mnist(root, split="train")
    for loc in LOCALIZATIONS:
        panels = []
        for kind in KINDS:
            for d in (0, 3, 5, 7, 9):
                res = finished.get(_key(kind, d, loc))
                if res is not None:
                    s = make_coloc_set(test_x, test_y, d, kind=kind, n=res["n"], seed=0, clutter_pool=train_x)
                    panels.append((f"{kind.upper()} digit {d}", s.images[:2], res))
        if panels:
            steps = panels[0][2]["history"][-1]["step"]
            panel_figure(box_panels(panels), f"Boxes over {steps} steps (light to dark);\ntrue frame dashed",
                         size=(2.0, 2.1)).savefig(out / ("fig_coloc.png" if loc == "paper" else f"fig_coloc_{loc}.png"),
                                                  dpi=90)


def box_panels(panels: list[tuple[str, torch.Tensor, dict[str, Any]]]) -> list[list[Any]]:
    """Panels of images with their attended boxes over optimisation steps (the paper's Fig. 4), one column a set.

    Args:
        panels: ``(title, images (k, 1, S, S), result)``; ``result`` holds ``history`` (``[{"step", "params"}]``,
            params per image (s, tx, ty)) and ``true_boxes``, the first k images' entries matching ``images``.

    Returns:
        Rows of :class:`stnkit.viz.Panel` (None where a set has fewer images), for :func:`stnkit.viz.panel_figure`.
    """
    from stnkit.losses import attended_box
    from stnkit.viz import Panel, box_outline

    k = max(p[1].shape[0] for p in panels)
    grid: list[list[Any]] = [[None] * len(panels) for _ in range(k)]
    for col, (title, images, res) in enumerate(panels):
        history = res["history"]
        for row in range(images.shape[0]):
            outlines = []
            for j, h in enumerate(history):
                box = attended_box("attention", torch.tensor([h["params"][row]]), images.shape[-2:])[0].tolist()
                shade = 0.15 + 0.85 * j / max(len(history) - 1, 1)  # matplotlib's autumn_r: yellow to red
                outlines.append((box_outline(box), {"color": (1.0, 1.0 - shade, 0.0),
                                                    "lw": 0.8 if j < len(history) - 1 else 1.8}))
            outlines.append((box_outline(res["true_boxes"][row]), {"color": "white", "lw": 1.0, "ls": "--"}))
            grid[row][col] = Panel(images[row], tuple(outlines), title=title if row == 0 else "")
    return grid


EXPERIMENT = Experiment(
    name=NAME, title="App. A.2: co-localisation of digits with a triplet loss (T and TC, per digit, two loc. nets)",
    cells=CELLS, budgets=BUDGETS, default_budget="cpu-1k", render=render_markdown, run_seed=colocalise,
    summarize=summarize, headline=headline, setup=(ENCODER,), describe=_describe, figures=_figures, json_indent=None,
)
