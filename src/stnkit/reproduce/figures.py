"""Figures of the reproductions (matplotlib, imported lazily): what each transformer learned, per distortion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["error_curves", "table1_curves", "table1_figures", "transformer_rows"]


def transformer_rows(rows: Sequence[tuple[str, Any]], images: torch.Tensor, title: str) -> Any:
    """Draw one row per model: each test input with its attended region, beside the transformer's output.

    Args:
        rows: ``(label, model)`` pairs; each model has ``transformer`` and ``transform(x) -> (warped, params)``.
        images: the same test inputs for every row, shape (N, C, H, W) in [0, 1].
        title: figure title.

    Returns:
        A matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    from stnkit.grid import denormalize_points
    from stnkit.viz import _imshow, attended_region

    n = images.shape[0]
    h, w = images.shape[2:]
    fig = Figure(figsize=(1.5 * 2 * n, 1.6 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), 2 * n, squeeze=False)
    for r, (label, model) in enumerate(rows):
        model.eval()
        with torch.no_grad():
            warped, params = model.transform(images)
        st = model.transformer
        region = attended_region(st.transform, params.float(), (h, w), align_corners=st.align_corners)
        for i in range(n):
            ax_in, ax_out = axes[r, 2 * i], axes[r, 2 * i + 1]
            _imshow(ax_in, images[i])
            ax_in.plot(region[i, :, 0], region[i, :, 1], color="tab:red", lw=1.0)
            if st.transform.name == "tps":
                cp = denormalize_points(params[i].reshape(-1, 2).float(), (h, w), st.align_corners)
                ax_in.scatter(cp[:, 0], cp[:, 1], s=4, color="tab:orange", zorder=3)
            ax_in.set_xlim(-0.5, w - 0.5)
            ax_in.set_ylim(h - 0.5, -0.5)
            _imshow(ax_out, warped[i])
            for ax in (ax_in, ax_out):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def table1_figures(out: str | Path, cells: Sequence[Any], n: int = 6) -> list[Path]:
    """Write ``fig_<dataset>.png`` per distortion: the finished ST cells' transformers on the same test digits.

    Args:
        out: the Table 1 output folder (cells under ``cells/<key>/s0``).
        cells: finished :class:`~stnkit.reproduce.table1.Cell` objects.
        n: test digits per row.

    Returns:
        The written paths.
    """
    from stnkit.training import load_checkpoint
    from stnkit.viz import _test_images

    out = Path(out)
    written = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        st_cells = [c for c in cells if c.dataset == dataset and c.model.startswith("st-")]
        rows, images = [], None
        for c in st_cells:
            run_dir = out / "cells" / c.key / "s0"
            if not (run_dir / "checkpoints" / "last.ckpt").exists():
                continue
            lit, config, _ = load_checkpoint(run_dir)
            if images is None:
                images, _labels = _test_images(config, n, None)
            rows.append((f"{c.model.upper()} {c.transform}", lit.model))
        if not rows or images is None:
            continue
        fig = transformer_rows(rows, images, f"{dataset.upper()}: test inputs with the attended region (red; TPS "
                               "control points orange) and the transformer's output")
        path = out / f"fig_{dataset}.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


def error_curves(series: Sequence[dict[str, Any]], title: str, x: str = "step", figure: Any = None,
                 legend: bool = True) -> Any:
    """Plot validation error against training length, one line per run, with its test error and the paper's.

    Args:
        series: one dict per run: ``label``, ``curve`` (:func:`~stnkit.reproduce.results.val_curve` rows), and
            optionally ``test_err`` (drawn as a marker at the last step), ``paper`` (a dotted line in the
            same colour) and ``color``.
        title: figure title.
        x: ``"step"`` (iterations), ``"samples"`` (training samples; the rows must hold it) or ``"train_s"``
            (training seconds, validation excluded; drawn in minutes).
        figure: a matplotlib ``Figure`` or ``SubFigure`` to draw into (default: a new figure).
        legend: draw the legend beside the axes (one entry per run, its test error in the label).

    Returns:
        A matplotlib ``Figure`` (log-scale error axis) or the ``figure`` passed in.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    xlabels = {"step": "iterations", "samples": "training samples",
               "train_s": "training minutes (validation excluded)"}
    if x not in xlabels:
        raise ValueError(f"x must be one of {', '.join(map(repr, xlabels))}; got {x!r}")
    fig = figure if figure is not None else Figure(figsize=(9.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(series):
        curve = s["curve"]
        if not curve:
            continue
        color = s.get("color", f"C{i % 10}")
        xs = [c[x] / (60 if x == "train_s" else 1) for c in curve]
        test = s.get("test_err")
        label = s["label"] + (f": test {test:.2f} %" if test is not None else "")
        ax.plot(xs, [c["val_err"] for c in curve], color=color, marker=".", ms=4, lw=1.2, label=label)
        if test is not None:
            ax.scatter([xs[-1]], [test], color=color, marker="*", s=90, zorder=3)
        if s.get("paper") is not None:
            ax.axhline(s["paper"], color=color, ls=":", lw=1.2, label=f"paper {s['paper']:.1f} %")
    ax.set_yscale("log")
    for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):  # 0.5, 2, not 5x10^-1
        axis_format(FormatStrFormatter("%g"))
    ax.set_xlabel(xlabels[x])
    ax.set_ylabel("error (%)")
    ax.grid(True, which="both", alpha=0.3)
    if legend:  # beside the axes: inside, it would hide the curves' ends and the test-error stars
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(title, fontsize=10)
    return fig


def table1_curves(out: str | Path, cells: Sequence[Any], budget: str) -> list[Path]:
    """Write ``curves_<dataset>.png``: validation error vs iterations of every finished cell of a distortion."""
    from stnkit.reproduce.results import CellStore, val_curve

    out = Path(out)
    store = CellStore(out)
    written = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        series = []
        for c in cells:
            if c.dataset != dataset:
                continue
            res = store.load(c.key) or {}
            label = c.model.upper() + (f" {c.transform}" if c.transform and c.model.startswith("st-") else "")
            series.append({"label": label, "curve": val_curve(store.cell_dir(c.key) / "s0"),
                           "test_err": res.get("error"), "paper": c.paper})
        if not any(s["curve"] for s in series):
            continue
        fig = error_curves(series, f"{dataset.upper()} ({budget} budget): validation error vs iterations\n"
                           "test error at the end (star), the paper's test error (dotted)")
        path = out / f"curves_{dataset}.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written
