"""MNIST addition (Jaderberg et al. 2015, App. A.1): test error (%) of FCN, CNN, ST-FCN and 2xST-FCN.

Input: two 42x42 channels, each holding its own RTS-distorted digit; target: their sum (19 classes). Rows: the FCN,
the CNN, a single ST-FCN (one transformer warping both channels) and the 2xST-FCN (two transformers in parallel,
each seeing both channels and warping both, outputs concatenated into 4 channels for the FCN), the ST rows with
affine, projective and 16-point TPS transformers: 8 cells, all trained by :func:`stnkit.training.fit` with the same
parameter budget (400k: two ST-FCN localisation nets on 2x42x42 inputs take 230k). Figure: what each of the two
parallel transformers attends to.

Budgets: ``smoke`` (seconds per cell, for tests); ``cpu`` (the fast CPU recipe with the localisation learning rate
at x1, 10,000 steps of batch 128 per cell: about 2.5 hours for the 8 cells on one core of the project's 2-core
machine, half of it the CNN; measured rates in :data:`BUDGETS`); ``paper`` (App. A.4's SGD recipe, 150k
iterations, 3 seeds).

Probes (1,000 validation / 2,000 test images, one seed): with the ``cpu`` recipe's 3x localisation learning rate
the 2xST-FCN (affine) diverged: both localisation nets regressed |theta| of 20-100, every transformer output was
blank and the validation error stayed at 90.1 % (the most frequent sum) for all 8,000 steps. With x1 it learns,
slowly: 90.4 / 89.2 / 85.5 / 84.9 % validation error at steps 1,000-4,000 (with x3 and ``bound=1`` 87 %); the
FCN is at 86-89 % after 1,500-3,000 steps (chance: 89-95 % depending on the sum's frequency). Addition is learned
far more slowly than single digits (the paper trains 150k iterations of 256).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stnkit.reproduce.cells import FitCell, budget_recipe, run_fit_cells, select
from stnkit.reproduce.results import CellStore, atomic_write_text, fmt, markdown_table

__all__ = ["BUDGETS", "CELLS", "PAPER", "attention_shares", "branch_ink", "run", "write_outputs"]

NAME = "addition"
TRANSFORMS = ("affine", "projective", "tps")
T_LABEL = {"affine": "Aff", "projective": "Proj", "tps": "TPS"}
PARAM_BUDGET = 400_000

#: Test error (%) of App. A.1. The paper reports the single ST-FCN's best transformer only (18.5); the per-transform
#: 2xST-FCN numbers are from secondary transcriptions (the paper's text quotes 5.8 for the best).
PAPER: dict[str, float] = {
    "fcn": 47.7, "cnn": 14.7,
    **{f"st-fcn-{t}": 18.5 for t in TRANSFORMS},
    "st-fcn-x2-affine": 9.0, "st-fcn-x2-projective": 5.9, "st-fcn-x2-tps": 5.8,
}
PAPER_NOTE = {**{f"st-fcn-{t}": "best single ST-FCN" for t in TRANSFORMS},
              **{f"st-fcn-x2-{t}": "secondary" for t in TRANSFORMS}}


def _cells() -> list[FitCell]:
    base = {"dataset": NAME, "param_budget": PARAM_BUDGET}
    cells = [FitCell("fcn", "FCN", {**base, "model": "fcn"}, PAPER["fcn"]),
             FitCell("cnn", "CNN", {**base, "model": "cnn"}, PAPER["cnn"])]
    for model, label in (("st-fcn", "ST-FCN"), ("st-fcn-x2", "2xST-FCN")):
        cells += [FitCell(f"{model}-{t}", f"{label} {T_LABEL[t]}", {**base, "model": model, "transform": t},
                          PAPER[f"{model}-{t}"]) for t in TRANSFORMS]
    return cells


CELLS = _cells()

#: TrainConfig fields per budget (:data:`CELL_FIELDS` adds per-cell ones). ``cpu``: measured on the 2-core machine
#: (1 thread), a training step of batch 128 takes about 0.02-0.03 s for the FCN, ST-FCN and 2xST-FCN (any transform)
#: and about 1 s for the CNN (400k parameters: conv widths 47/94), data generation included. At 10,000 steps every
#: FCN-type model was still near chance (FCN 81 %, ST-FCN 71-78 %, 2xST-FCN 78-83 %, one-cycle peak at step 2,000;
#: two of the three 2xST-FCNs had a branch leave the image): the FCN-type cells train for 60,000 steps (about 20-30
#: minutes each), the CNN for 10,000 (about 2.5 hours: the most compute of any cell still).
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"recipe": "smoke", "steps": 4, "eval_every": 2, "train_subset": 256, "val_subset": 64,
              "test_subset": 128, "val_size": 64},
    "cpu": {"recipe": "cpu", "steps": 60_000, "eval_every": 2000, "loc_lr_scale": 1.0},
    "paper": {"recipe": "paper"},
}
#: Per budget, per cell key: TrainConfig fields that replace the budget's (recorded in the cell's result).
CELL_FIELDS: dict[str, dict[str, dict[str, Any]]] = {"cpu": {"cnn": {"steps": 10_000, "eval_every": 1000}}}
DEFAULT_SEEDS = {"smoke": 1, "cpu": 1, "paper": 3}
#: What the markdown says about a budget's choices (measured; the first cpu budget's cells are in ``first-10k/``).
BUDGET_NOTES = {
    "cpu": "The CNN trains 10,000 steps, the FCN-type models 60,000: a CNN step costs about 40x an FCN's, so the "
           "CNN still gets the most compute. A first cpu budget trained every cell 10,000 steps (one-cycle peak at "
           "step 2,000): the FCN-type models stayed near chance (FCN 81 %, ST-FCN 71-78 %, 2xST-FCN 78-83 %, one "
           "branch of two 2xST-FCNs outside the image); its cells are kept in `first-10k/`.",
}


def run(
    out: str | Path = "results/addition",
    budget: str = "cpu",
    cells: Sequence[str] | None = None,
    seeds: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    figures: bool = True,
    overrides: dict[str, Any] | None = None,
    log=print,
) -> dict[str, Any]:
    """Train and test the selected cells (skipping finished ones), then write the table and the figure.

    Args:
        out: output folder (``addition.json``, ``addition.md``, ``fig_addition.png``, ``cells/``).
        budget: ``"smoke"``, ``"cpu"`` or ``"paper"`` (see :data:`BUDGETS`).
        cells: shell patterns over the cell keys (``fcn``, ``cnn``, ``st-fcn-affine``, ``st-fcn-x2-*`` ...).
        seeds: seeds per cell (averaged); default 1 (3 for ``paper``).
        data_dir: MNIST folder (default ``$STNKIT_DATA``, then the cache).
        progress: progress bars.
        figures: draw the parallel transformers' figure.
        overrides: extra TrainConfig fields for every cell (e.g. ``{"threads": 2}``).
        log: where progress lines go.

    Returns:
        The table as written to ``addition.json``.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; expected one of {', '.join(BUDGETS)}")
    out = Path(out)
    chosen = [_with_budget_fields(c, budget) for c in select(CELLS, cells, NAME)]
    run_fit_cells(out, chosen, budget, BUDGETS[budget], seeds or DEFAULT_SEEDS[budget],
                  data_dir, progress, overrides, log, after_cell=lambda: write_outputs(out, budget, figures=False))
    return write_outputs(out, budget, figures=figures, data_dir=data_dir)


def _with_budget_fields(cell: FitCell, budget: str) -> FitCell:
    extra = CELL_FIELDS.get(budget, {}).get(cell.key, {})
    if not extra:
        return cell
    return FitCell(cell.key, cell.label, {**cell.fields, **extra}, cell.paper, {**cell.info, "cell_fields": extra})


def write_outputs(out: str | Path, budget: str, figures: bool = True, data_dir: str | None = None
                  ) -> dict[str, Any]:
    """(Re)write ``addition.json`` and ``addition.md`` (and the figure) from the finished cells in ``out``."""
    out = Path(out)
    store = CellStore(out)
    finished = store.finished(c.key for c in CELLS)
    table: dict[str, Any] = {"budget": budget, "recipe": _recipe_summary(budget), "param_budget": PARAM_BUDGET,
                             "cell_fields": CELL_FIELDS.get(budget, {}),
                             "cells": store.table_cells(c.key for c in CELLS)}
    shares_path = out / "attention_shares.json"
    if figures:
        shares = _figure(out, finished, data_dir)
        if shares is not None:
            atomic_write_text(shares_path, json.dumps(shares, indent=2) + "\n")
    if shares_path.exists():
        table["attention_shares"] = json.loads(shares_path.read_text())
    atomic_write_text(out / f"{NAME}.json", json.dumps(table, indent=2) + "\n")
    atomic_write_text(out / f"{NAME}.md", render_markdown(table))
    return table


def _recipe_summary(budget: str) -> dict[str, Any]:
    return budget_recipe(BUDGETS[budget])


def render_markdown(table: dict[str, Any]) -> str:
    """Render the side-by-side table (ours vs the paper) and the ordering checks."""
    by_key = {c["key"]: c for c in table["cells"]}
    r = table["recipe"]
    lines = [
        "# MNIST addition reproduction (App. A.1): test error (%)\n",
        f"Budget **{table['budget']}**: recipe `{r['name']}` — {r['optimizer']} lr {r['lr']} ({r['scheduler']}), "
        f"batch {r['batch_size']}, {r['steps']} iterations per cell{_cell_fields_text(table)}, localisation lr "
        f"x{r['loc_lr_scale']:g}; every "
        f"model ~{table['param_budget']:,} "
        "parameters; ST outputs 21x21 (halved as for RTS). Input: two 42x42 channels with independently RTS-"
        "distorted digits; target: their sum (19 classes).\n",
    ]
    if table["budget"] in BUDGET_NOTES:
        lines.append(BUDGET_NOTES[table["budget"]] + "\n")
    rows = []
    for c in CELLS:
        res = by_key.get(c.key)
        note = f" ({PAPER_NOTE[c.key]})" if c.key in PAPER_NOTE else ""
        if res is None:
            rows.append([c.label, "not run", f"{fmt(c.paper, 1)}{note}", "—", "—", "—", "—", "—"])
            continue
        diff = None if c.paper is None else res["error"] - c.paper
        rows.append([c.label, f"**{fmt(res['error'])}**", f"{fmt(c.paper, 1)}{note}", fmt(diff, 2, signed=True),
                     f"{res['params']:,}", f"{res['iterations']:,}", f"{res['train_s'] / 60:.1f} min",
                     res.get("st_health") or "—"])
    lines.append(markdown_table(["model", "ours", "paper", "ours − paper", "params", "iterations", "training",
                                 "localisation nets at the end"], rows))
    lines.append("## Does the paper's ordering hold?\n")
    lines += [f"- {line}" for line in ordering_checks(by_key)]
    shares = table.get("attention_shares")
    if shares:
        inks_unknown = [None] * len(shares["channel1_share"])  # results written before the ink was recorded
        lines.append(f"\n## Do the two parallel transformers attend to different digits? ({shares['cell']})\n")
        lines.append("Share of each branch's output ink that comes from the second channel's digit (0 = only the "
                     "first digit, 1 = only the second, 0.5 = both equally; "
                     f"over {_apart_text(shares)}): "
                     + ", ".join(_share_text(i, s, ink) for i, (s, ink) in
                                 enumerate(zip(shares["channel1_share"], shares.get("ink") or inks_unknown)))
                     + ". Figure: `fig_addition.png`.\n")
    lines.append(f"\nCells finished: {len(by_key)} of {len(CELLS)}. Code: stnkit "
                 f"{', '.join(sorted({c['version'] for c in table['cells']})) or '—'}, commit(s) "
                 f"{', '.join(sorted({c['commit'] for c in table['cells']})) or '—'}.\n")
    return "\n".join(lines)


def _apart_text(shares: dict[str, Any]) -> str:
    if "n_apart" not in shares:  # written before the shares left out overlapping digits
        return f"{shares['n']} test images"
    return (f"the {shares['n_apart']} of {shares['n']} test images whose digits overlap by less than "
            f"{SEPARATE_OVERLAP:.0%} of the smaller one's ink")


def _share_text(i: int, share: float | None, ink: float | None) -> str:
    ink_text = "" if ink is None else f" (output ink per pixel {ink:.2f} of the input's)"
    return f"branch {i + 1}: " + ("blank, attends to neither digit" if share is None else f"{share:.2f}") + ink_text


def _cell_fields_text(table: dict[str, Any]) -> str:
    """`` (cnn 10,000)``: the cells whose steps the budget sets apart (empty if none)."""
    steps = {k: v["steps"] for k, v in (table.get("cell_fields") or {}).items() if "steps" in v}
    return " (" + ", ".join(f"{k} {v:,}" for k, v in steps.items()) + ")" if steps else ""


def ordering_checks(by_key: dict[str, dict[str, Any]]) -> list[str]:
    """State whether 2xST-FCN < CNN < single ST-FCN < FCN in error per transform (the paper's ordering)."""
    lines = []
    for t in TRANSFORMS:
        chain = [("2xST-FCN", f"st-fcn-x2-{t}"), ("CNN", "cnn"), ("ST-FCN", f"st-fcn-{t}"), ("FCN", "fcn")]
        errs = [(label, by_key[k]["error"]) for label, k in chain if k in by_key]
        if len(errs) < len(chain):
            lines.append(f"{T_LABEL[t]}: 2xST-FCN < CNN < ST-FCN < FCN: not all cells run yet")
            continue
        holds = all(a[1] < b[1] for a, b in zip(errs, errs[1:]))
        lines.append(f"{T_LABEL[t]}: 2xST-FCN < CNN < ST-FCN < FCN: {'holds' if holds else 'does NOT hold'} ("
                     + ", ".join(f"{label} {e:.2f}" for label, e in errs) + ")")
    return lines


def attention_shares(model: Any, images: torch.Tensor) -> list[float | None]:
    """Return, per parallel branch, the share of its output ink that comes from channel 1 (the second digit).

    Each branch warps both channels with one transform; a branch that attends to the first digit outputs mostly
    channel 0's ink (share near 0), one that attends to the second outputs mostly channel 1's (near 1). The shares
    count the images whose digits overlap by less than :data:`SEPARATE_OVERLAP` of the smaller digit's ink (where the
    digits lie on each other, any crop of one holds the other; all images if none is apart). A branch
    whose outputs hold almost no ink (under :data:`BLANK_INK` of the input's ink per pixel, e.g. a window that
    left the image) attends to neither digit: its share is None (see :func:`branch_ink`).

    Args:
        model: a :class:`~stnkit.models.addition.ParallelSTClassifier` over 2-channel inputs.
        images: inputs (N, 2, H, W).

    Returns:
        One share in [0, 1] (or None) per branch.
    """
    return _ink_stats(model, images)[0]


#: attention shares count the images whose two digits overlap by less than this share of the smaller one's ink
SEPARATE_OVERLAP = 0.1
#: below this output ink per pixel, relative to the input's, a branch counts as blank in :func:`attention_shares`
BLANK_INK = 0.05


def branch_ink(model: Any, images: torch.Tensor) -> list[float]:
    """Return, per parallel branch, its outputs' mean ink per pixel relative to the inputs' (0 = blank outputs).

    A branch at the identity gives about 1; one zoomed onto a digit gives more (the digit fills its output), one
    whose window left the image gives about 0.

    Args:
        model: a :class:`~stnkit.models.addition.ParallelSTClassifier` over 2-channel inputs.
        images: inputs (N, 2, H, W).
    """
    return _ink_stats(model, images)[1]


def _ink_stats(model: Any, images: torch.Tensor) -> tuple[list[float | None], list[float], int]:
    """(attention shares, ink per pixel relative to the input's) per branch, and the images the shares count."""
    model.eval()
    with torch.no_grad():
        merged, _ = model.transform(images)  # (N, 2k, H_out, W_out): branch b = channels 2b, 2b + 1
    per_image = merged.clamp_min(0).sum(dim=(2, 3)).view(images.shape[0], -1, 2)  # (N, k, 2)
    x = images.clamp_min(0)
    per_pixel_in = x.sum() / (images.shape[2] * images.shape[3])
    relative = per_image.sum(dim=(0, 2)) / (merged.shape[2] * merged.shape[3]) / per_pixel_in.clamp_min(1e-12)  # (k,)
    # where the two digits lie on each other no crop can hold one without the other: shares count the rest
    overlap = torch.minimum(x[:, 0], x[:, 1]).sum(dim=(1, 2)) / x.sum(dim=(2, 3)).min(dim=1).values.clamp_min(1e-12)
    apart = overlap < SEPARATE_OVERLAP
    if not apart.any():
        apart = torch.ones_like(apart)
    counted = per_image[apart].sum(dim=0)  # (k, 2): each branch's two channels
    shares = counted[:, 1] / counted.sum(dim=1).clamp_min(1e-12)
    return ([None if float(r) < BLANK_INK else round(float(s), 3) for s, r in zip(shares, relative)],
            [round(float(r), 3) for r in relative], int(apart.sum()))


def _figure(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None, n: int = 6
            ) -> dict[str, Any] | None:
    """Draw the best finished 2xST-FCN's branches on test inputs; return its attention shares."""
    x2 = [finished[k] for k in (f"st-fcn-x2-{t}" for t in TRANSFORMS) if k in finished]
    run_dir = None
    for cell in sorted(x2, key=lambda c: c["error"]):
        candidate = out / "cells" / cell["key"] / "s0"
        if (candidate / "checkpoints" / "last.ckpt").exists():
            run_dir, key = candidate, cell["key"]
            break
    if run_dir is None:
        return None
    from stnkit.training import load_checkpoint
    from stnkit.viz import _test_images

    lit, config, _ = load_checkpoint(run_dir)
    images, labels = _test_images(config, 500, data_dir)
    shares, ink, apart = _ink_stats(lit.model, images)
    fig = parallel_figure(lit.model, images[:n], labels[:n], f"{key}: each branch's region on the input and its\n"
                          "output (branch 1 cyan, 2 pink; first digit red, second green)")
    fig.savefig(out / "fig_addition.png", dpi=90)
    return {"cell": key, "n": int(images.shape[0]), "n_apart": apart, "channel1_share": shares, "ink": ink}


def _rgb(two: torch.Tensor) -> torch.Tensor:
    """(2, H, W) -> (3, H, W): channel 1 red, channel 2 green."""
    return torch.cat([two, torch.zeros_like(two[:1])]).clamp(0, 1)


def parallel_figure(model: Any, images: torch.Tensor, labels: torch.Tensor | None, title: str) -> Any:
    """Draw each 2-channel input with every branch's attended region, then each branch's output.

    Args:
        model: a :class:`~stnkit.models.addition.ParallelSTClassifier`.
        images: inputs (N, 2, H, W).
        labels: optional sums (N,) for the panel titles.
        title: figure title.

    Returns:
        A matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    from stnkit.viz import _imshow, attended_region

    model.eval()
    with torch.no_grad():
        merged, params = model.transform(images)
        preds = model(images).argmax(1)
    branches = model.transformers.branches
    colours = ("tab:cyan", "tab:pink", "tab:olive", "tab:orange")
    n, k = images.shape[0], len(branches)
    h, w = images.shape[2:]
    fig = Figure(figsize=(1.7 * (1 + k), 1.8 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, 1 + k, squeeze=False)
    for i in range(n):
        _imshow(axes[i, 0], _rgb(images[i]))
        for b, st in enumerate(branches):
            region = attended_region(st.transform, params[b][i:i + 1].float(), (h, w), align_corners=st.align_corners)
            axes[i, 0].plot(region[0, :, 0], region[0, :, 1], color=colours[b % 4], lw=1.2)
            _imshow(axes[i, 1 + b], _rgb(merged[i, 2 * b:2 * b + 2]))
        axes[i, 0].set_xlim(-0.5, w - 0.5)
        axes[i, 0].set_ylim(h - 0.5, -0.5)
        if labels is not None:
            axes[i, 0].set_title(f"sum {int(labels[i])}, pred {int(preds[i])}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for b in range(k):
        axes[0, 1 + b].set_title(f"branch {b + 1}", fontsize=8, color=colours[b % 4])
    fig.suptitle(title, fontsize=9)
    return fig
