"""Figures of what a spatial transformer learned (matplotlib is imported here only, and lazily by the CLI).

The input panel shows the *attended region*: the border of the transformer's output frame mapped into the input
by ``transform_points`` (the output is sampled from inside it), plus the mapped control points for TPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from stnkit.grid import denormalize_points

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["REGION_COLORS", "Panel", "attended_region", "attention_panels", "box_outline", "error_curves",
           "error_curves_side_by_side", "gif_of_run", "grid_lines", "jacobian_image", "load_test_images",
           "panel_figure", "plot_transformations", "region_panels", "registration_panels", "transformer_panels",
           "transformer_rows", "visualize_run"]


def _border(points_per_edge: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Return the closed border of the normalised output frame, shape (4 * points_per_edge + 1, 2) as (x, y)."""
    t = torch.linspace(-1.0, 1.0, points_per_edge + 1, dtype=dtype)[:-1]  # (E,)
    one = torch.ones_like(t)
    edges = [torch.stack([t, -one], 1), torch.stack([one, t], 1), torch.stack([-t, one], 1), torch.stack([-one, -t], 1)]
    pts = torch.cat(edges)  # (4E, 2): top, right, bottom, left
    return torch.cat([pts, pts[:1]])  # (4E + 1, 2), closed


def attended_region(transform: Any, params: Tensor, input_size: Sequence[int], points_per_edge: int = 16,
                    align_corners: bool = False) -> Tensor:
    """Map the output frame's border into input pixel coordinates.

    Args:
        transform: a :class:`stnkit.transforms.Transform`.
        params: parameters (N, P) (output -> source, normalised).
        input_size: (H, W) of the input image.
        points_per_edge: samples per border edge (TPS borders are curves).
        align_corners: frame convention of the transformer.

    Returns:
        Closed polylines of shape (N, 4 * points_per_edge + 1, 2), (x, y) in input pixels (pixel i's centre at i).

    Example:
        >>> from stnkit.transforms import get
        >>> t = get("affine")
        >>> attended_region(t, t.identity()[None], (4, 4), points_per_edge=1)[0, :4]
        tensor([[-0.5000, -0.5000],
                [ 3.5000, -0.5000],
                [ 3.5000,  3.5000],
                [-0.5000,  3.5000]])
    """
    border = _border(points_per_edge, params.dtype).to(params.device)
    src = transform.transform_points(params, border)  # (N, M, 2) normalised source points
    return denormalize_points(src, tuple(input_size), align_corners)


@dataclass(frozen=True)
class Panel:
    """One image of a figure, with outlines and points drawn over it (no matplotlib needed to build one).

    Attributes:
        image: (C, H, W) in [0, 1]; C = 1 (grey), 2 (red, green) or 3 (RGB).
        outlines: ``(polyline, style)`` pairs: polyline (M, 2) as (x, y) in the image's pixels (pixel i's centre
            at i), style matplotlib line keywords (``color``, ``lw``, ``ls``).
        points: (K, 2) pixel (x, y) points drawn as dots (e.g. TPS control points), or None.
        title: panel title.
        title_color: its colour (e.g. red for a wrong prediction).
        ylabel: row label left of the panel.
    """

    image: Tensor
    outlines: Sequence[tuple[Tensor, dict[str, Any]]] = ()
    points: Tensor | None = None
    title: str = ""
    title_color: str = "black"
    ylabel: str = ""


def box_outline(box: Sequence[float]) -> Tensor:
    """Return a box's closed outline (5, 2) as (x, y) pixel corners, for :class:`Panel` outlines.

    Args:
        box: ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive (a 28-pixel frame from 0 is ``(0, 0, 28, 28)``).

    Example:
        >>> box_outline((0, 0, 2, 2))[:2].tolist()
        [[-0.5, -0.5], [1.5, -0.5]]
    """
    x0, y0, x1, y1 = (float(v) - 0.5 for v in box)
    return torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])


def attention_panels(image: Tensor, region: Tensor, output: Tensor, points: Tensor | None = None,
                     color: str = "tab:red") -> tuple[Panel, Panel]:
    """Return the "input + attended region" and "output" panels of one transformed image.

    Args:
        image: input (C, H, W).
        region: the attended region's closed border (M, 2), input pixels (see :func:`attended_region`).
        output: the transformer's output (C, H_out, W_out).
        points: mapped TPS control points (K, 2) in input pixels, or None.
        color: the region's colour.

    Example:
        >>> inp, out = attention_panels(torch.zeros(1, 8, 8), torch.zeros(5, 2), torch.zeros(1, 4, 4))
        >>> len(inp.outlines), out.outlines
        (1, ())
    """
    return Panel(image, ((region, {"color": color, "lw": 1.2}),), points), Panel(output)


def transformer_panels(model: Any, images: Tensor) -> list[tuple[Panel, Panel]]:
    """Run a model's transformer on images and return each one's input and output panels (:func:`attention_panels`).

    Args:
        model: a model with ``transformer`` and ``transform(x) -> (warped, params)`` (the ST models).
        images: inputs (N, C, H, W) in [0, 1].

    Raises:
        ValueError: the model has no spatial transformer.
    """
    if not hasattr(model, "transform") or not hasattr(model, "transformer"):
        raise ValueError(f"{type(model).__name__} has no spatial transformer to visualise (use an st-* model)")
    model.eval()
    with torch.no_grad():
        warped, params = model.transform(images)  # (N, C, H_out, W_out), (N, P)
    st = model.transformer
    h, w = images.shape[2:]
    regions = attended_region(st.transform, params.float(), (h, w), align_corners=st.align_corners)
    points: list[Tensor | None] = [None] * images.shape[0]
    if st.transform.name == "tps":  # (N, K, 2) source positions of the control points
        points = [denormalize_points(p.reshape(-1, 2).float(), (h, w), st.align_corners) for p in params]
    return [attention_panels(images[i], regions[i], warped[i], points[i]) for i in range(images.shape[0])]


def panel_figure(grid: Sequence[Sequence[Panel | None]], title: str | None = None,
                 size: tuple[float, float] = (1.6, 1.7),
                 legend: Sequence[tuple[str, dict[str, Any]]] = ()) -> Figure:
    """Draw a grid of panels (None leaves a cell empty); every reproduction's image figure is one of these.

    Args:
        grid: rows of panels.
        title: figure title.
        size: (width, height) of one panel in inches.
        legend: ``(label, line style)`` entries of a legend under the grid (e.g. what a coloured frame means).

    Returns:
        A matplotlib ``Figure`` (not attached to pyplot; save it with ``fig.savefig``).
    """
    from matplotlib.figure import Figure

    nrows, ncols = len(grid), max(len(row) for row in grid)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + (0.5 if title else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, row in enumerate(grid):
        for c in range(ncols):
            ax = axes[r, c]
            panel = row[c] if c < len(row) else None
            if panel is None:
                ax.set_axis_off()
                continue
            _imshow(ax, panel.image)
            for line, style in panel.outlines:
                ax.plot(line[:, 0], line[:, 1], **style)
            if panel.points is not None:
                ax.scatter(panel.points[:, 0], panel.points[:, 1], s=5, color="tab:orange", zorder=3)
            h, w = panel.image.shape[-2:]
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(panel.title, fontsize=8, color=panel.title_color)
            ax.set_ylabel(panel.ylabel, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    if legend:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], **style) for _, style in legend]
        fig.legend(handles, [label for label, _ in legend], loc="outside lower center", ncols=len(legend),
                   fontsize=7, frameon=False)
    return fig


def plot_transformations(model: Any, images: Tensor, labels: Tensor | None = None, ncols: int = 4,
                         title: str | None = None) -> Figure:
    """Draw test inputs beside the transformer's outputs, with the attended region on each input.

    Args:
        model: a model with ``transformer`` and ``transform(x) -> (warped, params)`` (the ST models).
        images: inputs (N, C, H, W), C = 1 or 3, values in [0, 1].
        labels: optional true labels (N,); each output's title then shows the true label and the prediction,
            red and marked ``x`` when wrong.
        ncols: input/output pairs per row.
        title: figure title.

    Returns:
        A matplotlib ``Figure`` (not attached to pyplot; save it with ``fig.savefig``).
    """
    pairs = transformer_panels(model, images)
    with torch.no_grad():
        preds = model(images).argmax(1) if labels is not None else None
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    grid: list[list[Panel | None]] = []
    for i, (inp, out) in enumerate(pairs):
        if i % ncols == 0:
            grid.append([])
        if preds is not None and labels is not None:
            ok = bool(preds[i] == labels[i])
            out = replace(out, title=f"true {int(labels[i])}, pred {int(preds[i])}" + ("" if ok else " x"),
                          title_color="black" if ok else "tab:red")
        grid[-1] += [replace(inp, title="input" if i < ncols else ""), out]
    legend = [("region the transformer samples (its output is to the right)", {"color": "tab:red", "lw": 1.2})]
    if preds is not None:
        legend.append(("red title, x: misclassified", {"color": "none"}))
    return panel_figure(grid, title, size=(2.0, 2.1), legend=legend)


def transformer_rows(rows: Sequence[tuple[str, Any]], images: Tensor, title: str) -> Figure:
    """Draw one row per model: each test input with its attended region, beside the transformer's output.

    Args:
        rows: ``(label, model)`` pairs of ST models (see :func:`transformer_panels`).
        images: the same test inputs for every row, shape (N, C, H, W) in [0, 1].
        title: figure title.

    Returns:
        A matplotlib ``Figure``.
    """
    grid = []
    for label, model in rows:
        panels = [p for pair in transformer_panels(model, images) for p in pair]
        grid.append([replace(panels[0], ylabel=label), *panels[1:]])
    return panel_figure(grid, title, size=(1.5, 1.6))


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

    Raises:
        ValueError: an unknown ``x``.
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


def _imshow(ax: Any, image: Tensor) -> None:
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        return
    if img.shape[0] == 2:  # two channels: red and green
        img = torch.cat([img, torch.zeros_like(img[:1])])
    ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")


def load_test_images(config: Any, n: int, data_dir: str | None = None) -> tuple[Tensor, Tensor]:
    """Return the first ``n`` test inputs and labels of a run's dataset (as its :class:`~stnkit.training.TrainConfig`).

    Args:
        config: the run's TrainConfig (changed in place: ``test_subset``, and ``data_dir`` when given).
        n: images.
        data_dir: MNIST folder (default: the run's).

    Returns:
        inputs (n, C, H, W) (volumes (n, 1, D, H, W) for 3-D data) and labels (n,).
    """
    from stnkit.training import make_datamodule

    if data_dir is not None:
        config.data_dir = data_dir
    config.test_subset = n
    dm: Any = make_datamodule(config, batch_size=n)
    dm.setup("test")
    return dm.test_set.get_batch(torch.arange(n))


def visualize_run(path: str | Path, out: str | Path, *, n: int = 16, ncols: int = 4, which: str = "last",
                  data_dir: str | None = None) -> Path:
    """Write the figure of a run's (or checkpoint's) transformer on the first ``n`` test images.

    Args:
        path: run directory or checkpoint file written by :func:`stnkit.training.fit`.
        out: output image path (``.png``, ``.pdf``, ...).
        n: number of test images.
        ncols: input/output pairs per row.
        which: ``"last"`` or ``"best"`` checkpoint of a run directory.
        data_dir: MNIST folder (default: the run's).

    Returns:
        The written path.
    """
    from stnkit.training import load_checkpoint

    lit, config, ckpt = load_checkpoint(path, which)
    images, labels = load_test_images(config, n, data_dir)
    title = f"{config.model} ({config.transform}) on {config.dataset.upper()}, step {ckpt.get('global_step', 0)}"
    fig = plot_transformations(lit.model, images, labels, ncols=ncols, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def gif_of_run(run_dir: str | Path, out: str | Path, *, n: int = 8, ncols: int = 4, data_dir: str | None = None,
               duration_ms: int = 600) -> Path:
    """Write a GIF of the transformer on fixed test digits over a run's snapshots (``checkpoints/history``).

    Args:
        run_dir: run directory written by :func:`stnkit.training.fit`.
        out: output ``.gif`` path.
        n: number of test images.
        ncols: input/output pairs per row.
        data_dir: MNIST folder (default: the run's).
        duration_ms: time per frame.

    Returns:
        The written path.

    Raises:
        FileNotFoundError: the run has no snapshots.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from stnkit.training import load_checkpoint

    snaps = sorted((Path(run_dir) / "checkpoints" / "history").glob("step-*.ckpt"))
    if not snaps:
        raise FileNotFoundError(f"{run_dir} has no checkpoint snapshots (checkpoints/history/step-*.ckpt) for a GIF")
    frames, images, labels = [], None, None
    for snap in snaps:
        lit, config, ckpt = load_checkpoint(snap)
        if images is None:
            images, labels = load_test_images(config, n, data_dir)
        title = f"{config.model} ({config.transform}) on {config.dataset.upper()}, step {ckpt.get('global_step', 0)}"
        fig = plot_transformations(lit.model, images, labels, ncols=ncols, title=title)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return out


def error_curves_side_by_side(series: Sequence[dict[str, Any]], title: str,
                              xs: Sequence[str] = ("samples", "train_s"), width_ratios: Sequence[float] = (1.0, 1.45),
                              size: tuple[float, float] = (16.0, 6.0)) -> Figure:
    """Plot the same runs' validation error against several training lengths side by side, one legend at the right.

    Args:
        series: one dict per run, as :func:`error_curves`; runs without a ``color`` get the 20 colours of ``tab20``.
        title: figure title.
        xs: one panel per entry, each an ``x`` of :func:`error_curves`.
        width_ratios: relative panel widths, one per ``xs`` (the last panel also holds the legend).
        size: (width, height) of the figure in inches.

    Returns:
        A matplotlib ``Figure`` with one subfigure per ``xs``.

    Raises:
        ValueError: ``xs`` and ``width_ratios`` of different lengths, or an unknown ``x``.

    Example:
        >>> curve = [{"step": 1, "samples": 128, "train_s": 2.0, "val_err": 5.0}]
        >>> fig = error_curves_side_by_side([{"label": "a", "curve": curve}], "runs")
        >>> len(fig.subfigs)
        2
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    if len(xs) != len(width_ratios):
        raise ValueError(f"width_ratios must have one entry per x ({len(xs)}); got {len(width_ratios)}")
    names = {"step": "iterations", "samples": "training samples", "train_s": "training time"}
    cmap = colormaps["tab20"]
    coloured = [{"color": cmap(i % 20), **s} for i, s in enumerate(series)]
    fig = Figure(figsize=size, layout="constrained")
    subs = list(fig.subfigures(1, len(xs), width_ratios=list(width_ratios), squeeze=False)[0])
    for sub, x in zip(subs, xs):
        error_curves(coloured, f"validation error vs {names.get(x, x)}", x=x, figure=sub, legend=False)
    fig.suptitle(title)
    handles, labels = subs[-1].axes[0].get_legend_handles_labels()
    subs[-1].legend(handles, labels, loc="outside right center", fontsize=7)
    return fig


#: colours of serial transformers' regions, first to last (:func:`region_panels`)
REGION_COLORS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "tab:cyan")


def region_panels(images: Tensor, regions: Sequence[Tensor], titles: Sequence[str] = (),
                  colors: Sequence[str] = REGION_COLORS) -> list[Panel]:
    """Return one panel per input image with several transformers' attended regions drawn over it.

    For serial transformers (e.g. SVHN's ST-CNN Multi, whose later transformers act on feature maps) the regions
    are each transformer's output frame composed back into the input (:meth:`stnkit.models.svhn.SequenceNet.
    attended_regions`).

    Args:
        images: inputs (N, C, H, W) in [0, 1].
        regions: per transformer, the output frame's corners or border (N, M, 2) as (x, y) in input pixel-edge
            coordinates (pixel i spans [i, i + 1], as :func:`stnkit.models.svhn.region_corners`); drawn closed.
        titles: per image, a panel title (none when empty).
        colors: per transformer, the outline's colour (cycled).

    Returns:
        N :class:`Panel` s.

    Example:
        >>> square = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]])
        >>> p = region_panels(torch.zeros(1, 1, 4, 4), [square, square / 2])[0]
        >>> len(p.outlines), p.outlines[0][0][[0, -1]].tolist()
        (2, [[-0.5, -0.5], [-0.5, -0.5]])
    """
    panels = []
    for i in range(images.shape[0]):
        outlines = []
        for k, region in enumerate(regions):
            line = region[i].detach().float().cpu() - 0.5  # (M, 2) pixel centres at integers
            outlines.append((torch.cat([line, line[:1]]), {"color": colors[k % len(colors)], "lw": 1.2}))
        panels.append(Panel(images[i].detach().cpu(), tuple(outlines), title=titles[i] if titles else ""))
    return panels


def jacobian_image(det: Tensor) -> Tensor:
    """Colour a Jacobian determinant map: blue where it shrinks, white at 1, red where it grows, black where folded.

    Args:
        det: determinants (H, W); ``log2(det)`` is clipped to [-1, 1] (halving to doubling).

    Returns:
        RGB image (3, H, W) in [0, 1], for a :class:`Panel`.

    Example:
        >>> jacobian_image(torch.tensor([[1.0, -1.0]]))[:, 0].T.tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    t = det.detach().float().clamp_min(1e-6).log2().clamp(-1.0, 1.0)  # (H, W)
    grow, shrink = t.clamp_min(0.0), (-t).clamp_min(0.0)
    rgb = torch.stack([1.0 - shrink, 1.0 - grow - shrink, 1.0 - grow])  # (3, H, W)
    return torch.where(det.detach() > 0, rgb, torch.zeros_like(rgb))


def grid_lines(grid_px: Tensor, every: int = 2, color: str = "tab:orange") -> tuple[tuple[Tensor, dict[str, Any]], ...]:
    """Return a deformed grid's lines as :class:`Panel` outlines: every ``every``-th row and column of sample points.

    Args:
        grid_px: where each output pixel samples the source, (H, W, 2) as (x, y) source pixels.
        every: spacing of the drawn lines, in output pixels.
        color: line colour.

    Example:
        >>> len(grid_lines(torch.zeros(4, 6, 2), every=2))
        5
    """
    style = {"color": color, "lw": 0.6}
    rows = [(grid_px[i], style) for i in range(0, grid_px.shape[0], every)]  # (W, 2) each
    cols = [(grid_px[:, j], style) for j in range(0, grid_px.shape[1], every)]  # (H, 2) each
    return tuple(rows + cols)


def registration_panels(moving: Tensor, fixed: Tensor, warped: Tensor, grid_px: Tensor, det: Tensor,
                        label: str = "", every: int = 2) -> list[Panel]:
    """Return one registered pair's row: moving, fixed, warped, the deformed grid over the moving image, det map.

    Args:
        moving: moving image (C, H, W).
        fixed: fixed image (C, H, W).
        warped: the moving image warped onto the fixed one (C, H, W).
        grid_px: sample positions in the moving image (H, W, 2), (x, y) pixels.
        det: Jacobian determinant of the map (H, W) (:func:`stnkit.fields.jacobian_determinant`).
        label: the row's label (the model).
        every: grid line spacing in pixels.

    Example:
        >>> row = registration_panels(*[torch.zeros(1, 4, 4)] * 3, torch.zeros(4, 4, 2), torch.ones(4, 4), "dense")
        >>> [p.title for p in row], row[0].ylabel
        (['moving', 'fixed', 'warped', 'deformed grid', 'Jacobian det.'], 'dense')
    """
    return [Panel(moving, title="moving", ylabel=label), Panel(fixed, title="fixed"), Panel(warped, title="warped"),
            Panel(moving, grid_lines(grid_px, every), title="deformed grid"),
            Panel(jacobian_image(det), title="Jacobian det.")]
