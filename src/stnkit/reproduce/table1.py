"""Table 1 of Jaderberg et al. 2015: test error (%) of FCN / CNN / ST-FCN / ST-CNN on distorted MNIST.

36 cells: for R, RTS, P and E, the FCN, the CNN, and ST-FCN and ST-CNN each with affine, projective and 16-point TPS
transformers (32 cells); for TC (60x60 translated + cluttered) FCN, CNN, ST-FCN and ST-CNN with the affine
transformer (4 cells). Every cell trains through :func:`stnkit.training.fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stnkit.reproduce.experiment import Budget, Cell, Experiment, budget_recipe
from stnkit.reproduce.results import (
    CellStore,
    fmt,
    markdown_table,
    recipe_text,
    transformer_figure,
    val_curve,
)

__all__ = ["EXPERIMENT", "PAPER", "cell_key", "ordering_checks", "render_markdown", "select_cells"]

DISTORTIONS = ("r", "rts", "p", "e")
DATASETS = (*DISTORTIONS, "tc")
TRANSFORMS = ("affine", "projective", "tps")
ROWS: tuple[tuple[str, str | None], ...] = (
    ("fcn", None), ("cnn", None),
    *(("st-fcn", t) for t in TRANSFORMS),
    *(("st-cnn", t) for t in TRANSFORMS),
)
ROW_LABEL = {"fcn": "FCN", "cnn": "CNN", "st-fcn": "ST-FCN", "st-cnn": "ST-CNN"}
T_LABEL = {"affine": "Aff", "projective": "Proj", "tps": "TPS", None: ""}

#: Test error (%) in the paper's Table 1 (TC: the ST rows use the affine transformer).
PAPER: dict[tuple[str, str | None], dict[str, float]] = {
    ("fcn", None): {"r": 2.1, "rts": 5.2, "p": 3.1, "e": 3.2, "tc": 13.2},
    ("cnn", None): {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 1.4, "tc": 3.5},
    ("st-fcn", "affine"): {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 2.7, "tc": 2.0},
    ("st-fcn", "projective"): {"r": 1.3, "rts": 0.9, "p": 1.4, "e": 2.6},
    ("st-fcn", "tps"): {"r": 1.1, "rts": 0.8, "p": 1.4, "e": 2.4},
    ("st-cnn", "affine"): {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.2, "tc": 1.7},
    ("st-cnn", "projective"): {"r": 0.8, "rts": 0.6, "p": 0.8, "e": 1.3},
    ("st-cnn", "tps"): {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.1},
}


def cell_key(dataset: str, model: str, transform: str | None) -> str:
    """Folder name of a cell, e.g. ``rts-st-cnn-affine``."""
    return "-".join([dataset, model, *([transform] if transform else [])])


def _cell(dataset: str, model: str, transform: str | None) -> Cell:
    label = ROW_LABEL[model] + (f" {T_LABEL[transform]}" if transform else "")
    fields = {"dataset": dataset, "model": model, **({"transform": transform} if transform else {})}
    return Cell(cell_key(dataset, model, transform), label, fields, PAPER[(model, transform)].get(dataset))


CELLS = (*(_cell(d, m, t) for d in DISTORTIONS for m, t in ROWS),
         *(_cell("tc", m, "affine" if m.startswith("st-") else None) for m in ("fcn", "cnn", "st-fcn", "st-cnn")))

#: ``cpu-3k``: the fast CPU recipe (Adam one-cycle, batch 128, bf16 where native) cut to 3,000 steps per cell, TC's
#: transformers at localisation lr x1; ``cpu-15k``: the whole cpu recipe, localisation lr x1, for chosen cells;
#: ``paper``: App. A.4 exactly (150k SGD iterations, 3 seeds). Why each choice: ``results/table1*/NOTES.md``.
BUDGETS = (
    Budget("smoke", {"recipe": "smoke", "steps": 6, "eval_every": 3, "train_subset": 256, "val_subset": 64,
                     "test_subset": 128, "val_size": 64}),
    Budget("cpu-3k", {"recipe": "cpu", "steps": 3000, "eval_every": 1000}, {"tc-*": {"loc_lr_scale": 1.0}},
           aliases=("cpu",)),
    Budget("cpu-15k", {"recipe": "cpu", "eval_every": 1000, "loc_lr_scale": 1.0}, aliases=("long",)),
    Budget("paper", {"recipe": "paper"}, seeds=3),
)


def select_cells(specs: Sequence[str] | None) -> list[Cell]:
    """Select cells by ``dataset[:model[:transform]]`` patterns; ``*`` matches anything.

    Examples of patterns: ``rts``, ``*:st-cnn``, ``rts:st-cnn:affine``, ``tc:cnn``. None or empty selects all 36.

    Raises:
        ValueError: a pattern that matches no cell (the message lists the valid parts).
    """
    if not specs:
        return list(CELLS)
    chosen: list[Cell] = []
    for spec in specs:
        parts = spec.lower().split(":")
        if len(parts) > 3:
            raise ValueError(f"bad cell pattern {spec!r}; expected dataset[:model[:transform]]")
        parts += ["*"] * (3 - len(parts))
        hits = [c for c in CELLS if all(p in ("*", v) for p, v in zip(parts, (
            c.fields["dataset"], c.fields["model"], c.fields.get("transform") or "none")))]
        if not hits:
            raise ValueError(
                f"cell pattern {spec!r} matches no Table 1 cell; datasets: {', '.join(DATASETS)}; models: fcn, "
                f"cnn, st-fcn, st-cnn; transforms: {', '.join(TRANSFORMS)} (TC: affine only)"
            )
        chosen += [c for c in hits if c not in chosen]
    return chosen


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    return {"recipe": budget_recipe(budget.fields), "overrides": dict(budget.overrides)}


def render_markdown(table: dict[str, Any]) -> str:
    """Render the side-by-side table (ours vs paper, difference) and the ordering checks."""
    by_key = {cell_key(c["dataset"], c["model"], c["transform"]): c for c in table["cells"]}
    r = table["recipe"]
    per_dataset = "".join(f" ({p.split('-')[0].upper()}: x{f['loc_lr_scale']:g})"
                          for p, f in table.get("overrides", {}).items() if "loc_lr_scale" in f)
    lines = [
        "# Table 1 reproduction: distorted MNIST, test error (%)\n",
        f"{recipe_text(table['budget'], r)}, {r['steps']} iterations per cell, localisation lr "
        f"x{r['loc_lr_scale']}{per_dataset}, ST output downsampling on RTS/TC: {r['st_downsample']}. {r['note']}\n",
        "Each cell: **ours** / paper (ours − paper). Paper: Jaderberg et al. 2015, Table 1 (TC: ST rows affine).\n",
    ]
    rows = []
    for model, transform in ROWS:
        row = [ROW_LABEL[model] + (f" {T_LABEL[transform]}" if transform else "")]
        for d in DATASETS:
            paper = PAPER[(model, transform)].get(d)
            res = by_key.get(cell_key(d, model, transform))
            if d == "tc" and paper is None:
                row.append("")
            elif res is None:
                row.append(f"not run / {fmt(paper, 1)}")
            else:
                diff = None if paper is None else res["error"] - paper
                row.append(f"**{fmt(res['error'])}** / {fmt(paper, 1)} ({fmt(diff, 2, signed=True)})")
        rows.append(row)
    lines.append(markdown_table(["model", "R", "RTS", "P", "E", "TC"], rows))
    lines.append("## Does the paper's ordering hold?\n")
    lines += [f"- {line}" for line in ordering_checks(by_key)]
    health = {k: c.get("st_health") for k, c in by_key.items() if c["model"].startswith("st-")}
    broken = [f"{k} ({h})" for k, h in health.items() if h not in (None, "alive")]
    unlogged = [k for k, h in health.items() if h is None]
    lines.append("\nTransformers not working at the end of training (`val/st_frozen` > 0: a dead localisation net, "
                 "one fixed warp; `val/st_blank` > 50 %: the output left the image): "
                 + (", ".join(broken) if broken else "none")
                 + (f" ({len(unlogged)} cells ran before these metrics were logged)" if unlogged else "") + ".")
    missing = [c.key for c in CELLS if c.key not in by_key]
    lines.append(f"\nCells finished: {len(by_key)} of {len(CELLS)}."
                 + (f" Not yet run: {', '.join(missing)}." if missing else ""))
    wall = sum(c["wall_s"] for c in table["cells"])
    lines.append(f"Total training wall time: {wall / 3600:.2f} h.\n")
    return "\n".join(lines)


def ordering_checks(by_key: dict[str, dict[str, Any]]) -> list[str]:
    """State, per dataset, whether every ST-CNN beats the CNN and every ST-FCN beats the FCN (finished cells)."""
    lines = []
    for d in DATASETS:
        for st, base in (("st-cnn", "cnn"), ("st-fcn", "fcn")):
            ref = by_key.get(cell_key(d, base, None))
            variants = [by_key.get(cell_key(d, st, t)) for t in (TRANSFORMS if d != "tc" else ("affine",))]
            present = [v for v in variants if v is not None]
            if ref is None or not present:
                lines.append(f"{d.upper()}: {ROW_LABEL[st]} vs {ROW_LABEL[base]}: not all cells run yet")
                continue
            worse = [v for v in present if v["error"] >= ref["error"]]
            verdict = "holds" if not worse else "does NOT hold"
            detail = ", ".join(f"{T_LABEL[v['transform']]} {v['error']:.2f}" for v in present)
            lines.append(f"{d.upper()}: every {ROW_LABEL[st]} beats {ROW_LABEL[base]} ({ref['error']:.2f}): {verdict} "
                         f"({detail}{'; incomplete' if len(present) < len(variants) else ''})")
    return lines


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None, n: int = 6) -> None:
    """Per dataset: ``fig_<d>.png`` (the ST cells' transformers on the same test digits) and ``curves_<d>.png``."""
    from stnkit.viz import error_curves

    store = CellStore(out)
    for d in DATASETS:
        done = [c for c in CELLS if c.fields["dataset"] == d and c.key in finished]
        rows = [(f"{c.fields['model'].upper()} {c.fields['transform']}", c.key) for c in done
                if c.fields["model"].startswith("st-")]
        transformer_figure(out, rows, out / f"fig_{d}.png", f"{d.upper()}: test inputs with the attended region (red; "
                           "TPS control points orange) and the transformer's output", n, data_dir)
        series = [{"label": c.fields["model"].upper() + (f" {c.fields['transform']}" if "transform" in c.fields
                                                         else ""),
                   "curve": val_curve(store.run_dir(c.key, 0)), "test_err": finished[c.key].get("error"),
                   "paper": c.paper} for c in done]
        if any(s["curve"] for s in series):
            budget = next(iter(finished.values()))["budget"]
            error_curves(series, f"{d.upper()} ({budget} budget): validation error vs iterations\ntest error at "
                         "the end (star), the paper's test error (dotted)").savefig(out / f"curves_{d}.png", dpi=90)


EXPERIMENT = Experiment(
    name="table1", title="Table 1: distorted MNIST (R, RTS, P, E, TC), FCN/CNN/ST-FCN/ST-CNN", cells=CELLS,
    budgets=BUDGETS, default_budget="cpu-3k", render=render_markdown, choose=select_cells, describe=_describe,
    figures=_figures,
)
