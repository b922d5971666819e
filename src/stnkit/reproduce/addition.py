"""MNIST addition (Jaderberg et al. 2015, App. A.1): test error (%) of FCN, CNN, ST-FCN and 2xST-FCN.

Input: two 42x42 channels, each holding its own RTS-distorted digit; target: their sum (19 classes). Rows: the FCN,
the CNN, a single ST-FCN (one transformer warping both channels) and the 2xST-FCN (two transformers in parallel,
each seeing both channels and warping both, outputs concatenated into 4 channels for the FCN), the ST rows with
affine, projective and 16-point TPS transformers: 8 cells, all trained by :func:`stnkit.training.fit` with the same
parameter budget (400k: two ST-FCN localisation nets on 2x42x42 inputs take 230k). Figure: what each of the two
parallel transformers attends to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from stnkit.reproduce.experiment import Budget, Cell, Experiment, budget_recipe
from stnkit.reproduce.results import atomic_write_text, fmt, markdown_table, recipe_text, trained_model

__all__ = ["EXPERIMENT", "PAPER", "attention_shares", "branch_ink", "parallel_panels", "render_markdown"]

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
_BASE = {"dataset": NAME, "param_budget": PARAM_BUDGET}
CELLS = (
    Cell("fcn", "FCN", {**_BASE, "model": "fcn"}, PAPER["fcn"]),
    Cell("cnn", "CNN", {**_BASE, "model": "cnn"}, PAPER["cnn"]),
    *(Cell(f"{model}-{t}", f"{label} {T_LABEL[t]}", {**_BASE, "model": model, "transform": t}, PAPER[f"{model}-{t}"])
      for model, label in (("st-fcn", "ST-FCN"), ("st-fcn-x2", "2xST-FCN")) for t in TRANSFORMS),
)

#: ``cpu-60k``: the fast CPU recipe at localisation lr x1, 60,000 steps of batch 128 for the FCN-type cells and
#: 10,000 for the CNN (measured step costs and why: ``results/addition/NOTES.md``); ``paper``: App. A.4's SGD recipe,
#: 150k iterations, 3 seeds.
BUDGETS = (
    Budget("smoke", {"recipe": "smoke", "steps": 4, "eval_every": 2, "train_subset": 256, "val_subset": 64,
                     "test_subset": 128, "val_size": 64}),
    Budget("cpu-60k", {"recipe": "cpu", "steps": 60_000, "eval_every": 2000, "loc_lr_scale": 1.0},
           {"cnn": {"steps": 10_000, "eval_every": 1000}}, aliases=("cpu",)),
    Budget("paper", {"recipe": "paper"}, seeds=3),
)


def _describe(out: Path, budget: Budget) -> dict[str, Any]:
    table: dict[str, Any] = {"recipe": budget_recipe(budget.fields), "param_budget": PARAM_BUDGET,
                             "cell_fields": dict(budget.overrides)}
    shares_path = out / "attention_shares.json"
    if shares_path.exists():
        table["attention_shares"] = json.loads(shares_path.read_text())
    return table


def render_markdown(table: dict[str, Any]) -> str:
    """Render the side-by-side table (ours vs the paper) and the ordering checks."""
    by_key = {c["key"]: c for c in table["cells"]}
    r = table["recipe"]
    lines = [
        "# MNIST addition reproduction (App. A.1): test error (%)\n",
        f"{recipe_text(table['budget'], r)}, {r['steps']} iterations per cell{_cell_fields_text(table)}, "
        f"localisation lr x{r['loc_lr_scale']:g}; every model ~{table['param_budget']:,} "
        "parameters; ST outputs 21x21 (halved as for RTS). Input: two 42x42 channels with independently RTS-"
        "distorted digits; target: their sum (19 classes).\n",
    ]
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
    lines.append(f"\nCells finished: {len(by_key)} of {len(CELLS)}.\n")
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


def _figures(out: Path, finished: dict[str, dict[str, Any]], data_dir: str | None, n: int = 6) -> None:
    """Draw the best finished 2xST-FCN's branches on test inputs; write its attention shares."""
    for cell in sorted((finished[c.key] for c in CELLS if c.key.startswith("st-fcn-x2") and c.key in finished),
                       key=lambda c: c["error"]):
        loaded = trained_model(out, cell["key"])
        if loaded is not None:
            break
    else:
        return
    from stnkit.viz import load_test_images, panel_figure

    model, config = loaded
    images, labels = load_test_images(config, 500, data_dir)
    shares, ink, apart = _ink_stats(model, images)
    panel_figure(parallel_panels(model, images[:n], labels[:n]),
                 f"{cell['key']}: each branch's region on the input and its\noutput (branch 1 cyan, 2 pink; first "
                 "digit red, second green)", size=(1.7, 1.8)).savefig(out / "fig_addition.png", dpi=90)
    shares_record = {"cell": cell["key"], "n": int(images.shape[0]), "n_apart": apart, "channel1_share": shares,
                     "ink": ink}
    atomic_write_text(out / "attention_shares.json", json.dumps(shares_record, indent=2) + "\n")


def parallel_panels(model: Any, images: torch.Tensor, labels: torch.Tensor | None = None) -> list[list[Any]]:
    """Panels per 2-channel input: the input with every branch's attended region, then each branch's output.

    Args:
        model: a :class:`~stnkit.models.addition.ParallelSTClassifier`.
        images: inputs (N, 2, H, W).
        labels: optional sums (N,) for the input panels' titles.

    Returns:
        One row of :class:`stnkit.viz.Panel` per input (for :func:`stnkit.viz.panel_figure`).
    """
    from stnkit.viz import Panel, attended_region

    model.eval()
    with torch.no_grad():
        merged, params = model.transform(images)  # (N, 2k, H_out, W_out): branch b = channels 2b, 2b + 1
        preds = model(images).argmax(1)
    branches = model.transformers.branches
    colours = ("tab:cyan", "tab:pink", "tab:olive", "tab:orange")
    h, w = images.shape[2:]
    regions = [attended_region(st.transform, params[b].float(), (h, w), align_corners=st.align_corners)
               for b, st in enumerate(branches)]  # per branch (N, M, 2)
    rows = []
    for i in range(images.shape[0]):
        outlines = tuple((regions[b][i], {"color": colours[b % 4], "lw": 1.2}) for b in range(len(branches)))
        title = f"sum {int(labels[i])}, pred {int(preds[i])}" if labels is not None else ""
        rows.append([Panel(images[i], outlines, title=title),
                     *(Panel(merged[i, 2 * b:2 * b + 2], title=f"branch {b + 1}" if i == 0 else "",
                             title_color=colours[b % 4]) for b in range(len(branches)))])
    return rows


EXPERIMENT = Experiment(
    name=NAME, title="App. A.1: MNIST addition, FCN/CNN/ST-FCN/2xST-FCN", cells=CELLS, budgets=BUDGETS,
    default_budget="cpu-60k", render=render_markdown, describe=_describe, figures=_figures,
)
