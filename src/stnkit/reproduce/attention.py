"""Attention for efficiency: a transformer's small crop of a large input vs the CNN on the full input.

An attention transformer reads a small crop of a large cluttered input, so the classifier runs at the crop's
resolution; it is compared with the CNN on the full-resolution input (the paper's point that a transformer can
downsample, Sec. 3.4, and its TC experiments).

Data: translated + cluttered MNIST (the ``"tc"`` preset) at 60x60 (6 clutter crops, Table 1's TC) and in a 120x120
canvas (24 crops: the same clutter density). Cells per canvas: the CNN on the full input, and the attention ST-CNN
(``"st-cnn-attention"`` with its ``"heatmap"`` localisation: a score map on a ~30x30 pooled input whose soft-argmax
places a 30x30 or 20x20 crop; the same CNN widths on the crop). Reported side by side from one run: test error, and
the measured training and inference time per image of every model (timed back to back in the same process,
interleaved, best of several batches).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from stnkit.reproduce.experiment import Budget, Cell, Experiment, budget_recipe
from stnkit.reproduce.results import atomic_write_text, fmt, markdown_table, recipe_text, transformer_figure

__all__ = ["EXPERIMENT", "efficiency_checks", "render_markdown", "time_model", "timings"]

NAME = "attention"
CHANNELS = [16, 32]  # the conv widths of every classifier here: like-for-like compute
CANVASES = {60: {"clutter": 6}, 120: {"clutter": 24}}
CROPS = (30, 20)

#: The paper has no table for this comparison; for the 60x60 canvas its Table 1 TC errors are the reference (CNN
#: 3.5 %, ST-CNN 1.7 %, the ST-CNN there with a full-size output).
PAPER = {"tc60-cnn": 3.5, **{f"tc60-st-crop{c}": 1.7 for c in CROPS}}


def _cells(size: int) -> list[Cell]:
    base = {"dataset": "tc", "distortion": {"canvas_size": size, **CANVASES[size]}}
    cnn = Cell(f"tc{size}-cnn", f"CNN on {size}x{size}",
               {**base, "model": "cnn", "model_kwargs": {"channels": CHANNELS}}, PAPER.get(f"tc{size}-cnn"),
               {"canvas": size, "crop": None})
    # the crop is the classifier's input: no Table 1 TC halving on top of it
    return [cnn, *(Cell(f"tc{size}-st-crop{crop}", f"ST-CNN, {crop}x{crop} crop of {size}x{size}",
                        {**base, "model": "st-cnn-attention", "transform": "attention",
                         "model_kwargs": {"channels": CHANNELS, "crop": crop, "st_downsample": None,
                                          "localization": "heatmap"}},
                        PAPER.get(f"tc{size}-st-crop{crop}"), {"canvas": size, "crop": crop}) for crop in CROPS)]


CELLS = tuple(c for size in CANVASES for c in _cells(size))

#: ``cpu-1.5k``: the fast CPU recipe with batch 64, localisation lr x1: 1,500 steps for the CNNs and 6,000 for the
#: attention models, whose steps cost 3-10x less (equal compute, not equal steps; measured costs and why:
#: ``results/attention/NOTES.md``); ``paper``: App. A.4's SGD recipe, 150k iterations for every cell, 3 seeds.
BUDGETS = (
    Budget("smoke", {"recipe": "smoke", "steps": 4, "eval_every": 2, "train_subset": 256, "val_subset": 64,
                     "test_subset": 128, "val_size": 64}),
    Budget("cpu-1.5k", {"recipe": "cpu", "steps": 1500, "batch_size": 64, "eval_every": 500, "loc_lr_scale": 1.0},
           {"*-st-*": {"steps": 6000}}, aliases=("cpu",)),
    Budget("paper", {"recipe": "paper"}, seeds=3),
)
#: per budget: images per timed batch and timed rounds
TIMING = {"smoke": {"batch": 4, "repeats": 1}, "cpu-1.5k": {"batch": 64, "repeats": 10},
          "paper": {"batch": 64, "repeats": 10}}


def _build(cell: Cell) -> torch.nn.Module:
    from stnkit.models import create

    f = cell.fields
    kw = {"input_size": cell.info["canvas"], **f["model_kwargs"]}
    if f["model"] != "cnn":
        kw["transform"] = f["transform"]
    return create(f["model"], **kw)


def time_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Time one training step (forward, backward, Adam update) and one inference (eval, no grad) on a batch.

    Returns:
        ``{"train_ms", "infer_ms"}``: milliseconds per image of this single measurement.
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    t1 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        model(x)
    t2 = time.perf_counter()
    n = x.shape[0]
    return {"train_ms": (t1 - t0) * 1000 / n, "infer_ms": (t2 - t1) * 1000 / n}


def timings(cells: Sequence[Cell], batch: int = 64, repeats: int = 10) -> dict[str, Any]:
    """Time every cell's model back to back in this process: interleaved rounds, best round per model.

    The timing does not depend on the weights, so fresh models are timed; one warm-up round is discarded.

    Args:
        cells: the cells (their models are built from the cell fields).
        batch: images per measured batch.
        repeats: measured rounds (each times every model once).

    Returns:
        ``{"batch", "repeats", "threads", "models": {key: {"train_ms", "infer_ms", "params"}}}`` (ms per image).
    """
    from stnkit.models import count_params

    g = torch.Generator().manual_seed(0)
    models = {c.key: _build(c) for c in cells}
    inputs = {c.key: torch.rand(batch, 1, c.info["canvas"], c.info["canvas"], generator=g) for c in cells}
    y = torch.randint(0, 10, (batch,), generator=g)
    best: dict[str, dict[str, float]] = {}
    for r in range(repeats + 1):
        for key, model in models.items():
            t = time_model(model, inputs[key], y)
            if r == 0:
                continue  # warm-up: allocator and kernel selection
            cur = best.setdefault(key, {"train_ms": float("inf"), "infer_ms": float("inf")})
            cur["train_ms"] = min(cur["train_ms"], t["train_ms"])
            cur["infer_ms"] = min(cur["infer_ms"], t["infer_ms"])
    return {
        "batch": batch, "repeats": repeats, "threads": torch.get_num_threads(),
        "models": {k: {"train_ms": round(v["train_ms"], 4), "infer_ms": round(v["infer_ms"], 4),
                       "params": count_params(models[k])} for k, v in best.items()},
    }


def _time_all(out: Path, budget: Budget, log: Callable[[str], Any]) -> None:
    log(f"timing {len(CELLS)} models back to back (train step and inference, per image)")
    atomic_write_text(out / "timing.json", json.dumps(timings(CELLS, **TIMING[budget.name]), indent=2) + "\n")


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    recipe = budget_recipe(budget.fields)
    timing_path = out / "timing.json"
    return {"recipe": {**recipe, "st_steps": budget.fields_for(CELLS[1]).get("steps", recipe["steps"])},
            "channels": CHANNELS, "timing": json.loads(timing_path.read_text()) if timing_path.exists() else None}


def render_markdown(table: dict[str, Any]) -> str:
    """Render error and time side by side per canvas, and whether the attention model is faster and as accurate."""
    by_key = {c["key"]: c for c in table["cells"]}
    timing = (table.get("timing") or {}).get("models", {})
    r = table["recipe"]
    t = table.get("timing") or {}
    lines = [
        "# Attention for efficiency: a transformer's crop vs the full-resolution CNN\n",
        f"{recipe_text(table['budget'], r)}, {r['steps']} iterations per CNN and {r.get('st_steps', r['steps'])} "
        "per attention model (whose steps are cheaper; the checks below give both trainings' compute at the timed "
        f"costs), localisation lr x{r['loc_lr_scale']:g}. Translated + cluttered MNIST (6x6 clutter at "
        f"the density of Table 1's TC). Every classifier is the Table 1 CNN with conv widths {table['channels']}; "
        "the attention models' localisation is a score map on a ~30x30 pooled input, the crop centred at its "
        "soft-argmax. Times: ms per image, "
        + (f"measured back to back in one process ({t.get('threads')} threads, batch {t.get('batch')}, best of "
           f"{t.get('repeats')} interleaved rounds)" if t else "not measured yet")
        + "; the paper's reference for 60x60 is Table 1's TC (CNN 3.5 %, ST-CNN 1.7 %).\n",
    ]
    rows = []
    for c in CELLS:
        res, tm = by_key.get(c.key), timing.get(c.key, {})
        base = timing.get(f"tc{c.info['canvas']}-cnn", {})
        speed = (f"{base['infer_ms'] / tm['infer_ms']:.1f}x / {base['train_ms'] / tm['train_ms']:.1f}x"
                 if tm and base else "—")
        rows.append([c.label, f"**{fmt(res['error'])}**" if res else "not run", fmt(c.paper, 1),
                     f"{res['iterations']:,}" if res else "—", fmt(res["train_s"] / 60, 1) if res else "—",
                     fmt(tm.get("train_ms"), 3), fmt(tm.get("infer_ms"), 3), speed,
                     f"{tm['params']:,}" if tm else "—", (res or {}).get("st_health") or "—"])
    lines.append(markdown_table(["model", "test error %", "paper", "iterations", "training min", "train ms/img",
                                 "infer ms/img", "speed-up vs CNN (infer / train)", "params",
                                 "localisation net at the end"], rows))
    lines.append("## Is the attention model faster and at least as accurate?\n")
    lines += [f"- {line}" for line in efficiency_checks(by_key, timing)]
    lines.append(f"\nCells finished: {len(by_key)} of {len(CELLS)}. Figures: `fig_attention_60.png`, "
                 "`fig_attention_120.png` (the crop each transformer reads, red, and the crop itself).\n")
    return "\n".join(lines)


def efficiency_checks(by_key: dict[str, dict[str, Any]], timing: dict[str, dict[str, float]]) -> list[str]:
    """Per canvas and crop: is the attention model faster (inference and training) and at least as accurate?"""
    lines = []
    for size in CANVASES:
        cnn = by_key.get(f"tc{size}-cnn")
        for crop in CROPS:
            key = f"tc{size}-st-crop{crop}"
            st = by_key.get(key)
            t_st, t_cnn = timing.get(key), timing.get(f"tc{size}-cnn")
            if st is None or cnn is None or t_st is None or t_cnn is None:
                lines.append(f"{size}x{size}, crop {crop}: not all cells run yet")
                continue
            faster = t_st["infer_ms"] < t_cnn["infer_ms"] and t_st["train_ms"] < t_cnn["train_ms"]
            accurate = st["error"] <= cnn["error"]
            lines.append(f"{size}x{size}, crop {crop}: faster: {'yes' if faster else 'NO'} "
                         f"({t_cnn['infer_ms'] / t_st['infer_ms']:.1f}x inference); at least as accurate: "
                         f"{'yes' if accurate else 'NO'} ({st['error']:.2f} % vs CNN {cnn['error']:.2f} %), after "
                         f"{st['train_s'] / 60:.1f} vs {cnn['train_s'] / 60:.1f} training minutes"
                         + _compute_note(st, cnn, t_st, t_cnn)
                         + (f"; but its localisation net is {st['st_health']}: one fixed crop for every image, not "
                            "attention" if st.get("st_health") not in (None, "alive") else ""))
    return lines


def _compute_note(st: dict[str, Any], cnn: dict[str, Any], t_st: dict[str, float], t_cnn: dict[str, float]) -> str:
    """The two trainings' cost at the per-image training times measured back to back (load-independent)."""
    if not st.get("batch_size") or not cnn.get("batch_size"):
        return ""
    st_min = st["iterations"] * st["batch_size"] * t_st["train_ms"] / 60_000
    cnn_min = cnn["iterations"] * cnn["batch_size"] * t_cnn["train_ms"] / 60_000
    return (f" (at the timed per-image costs: {st_min:.1f} vs {cnn_min:.1f} min, {st_min / cnn_min:.1f}x the CNN's "
            "training compute)")


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None, n: int = 6) -> None:
    """Draw, per canvas, the crops the finished attention models read on the same test inputs."""
    for size in CANVASES:
        rows = [(f"crop {crop}", f"tc{size}-st-crop{crop}") for crop in CROPS if f"tc{size}-st-crop{crop}" in finished]
        transformer_figure(out, rows, out / f"fig_attention_{size}.png", f"TC {size}x{size}: the attended crop (red) "
                           "and what the classifier reads", n, data_dir)


EXPERIMENT = Experiment(
    name=NAME, title="attention for efficiency: an ST crop + small CNN vs a CNN on the full TC input (error and time)",
    cells=CELLS, budgets=BUDGETS, default_budget="cpu-1.5k", render=render_markdown, describe=_describe,
    after_cells=_time_all, figures=_figures,
)
