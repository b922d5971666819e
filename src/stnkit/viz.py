"""Figures of what a spatial transformer learned (matplotlib is imported here only, and lazily by the CLI).

The input panel shows the *attended region*: the border of the transformer's output frame mapped into the input
by ``transform_points`` (the output is sampled from inside it), plus the mapped control points for TPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from stnkit.grid import denormalize_points

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["attended_region", "gif_of_run", "plot_transformations", "visualize_run"]


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


def plot_transformations(model: Any, images: Tensor, labels: Tensor | None = None, ncols: int = 4,
                         title: str | None = None) -> Figure:
    """Draw test inputs beside the transformer's outputs, with the attended region on each input.

    Args:
        model: a model with ``transformer`` and ``transform(x) -> (warped, params)`` (the ST models).
        images: inputs (N, C, H, W), C = 1 or 3, values in [0, 1].
        labels: optional true labels (N,); predictions are shown as the panel titles (red when wrong).
        ncols: input/output pairs per row.
        title: figure title.

    Returns:
        A matplotlib ``Figure`` (not attached to pyplot; save it with ``fig.savefig``).
    """
    from matplotlib.figure import Figure

    if not hasattr(model, "transform") or not hasattr(model, "transformer"):
        raise ValueError(f"{type(model).__name__} has no spatial transformer to visualise (use an st-* model)")
    model.eval()
    with torch.no_grad():
        warped, params = model.transform(images)  # (N, C, H_out, W_out), (N, P)
        preds = model(images).argmax(1) if labels is not None else None
    st = model.transformer
    regions = attended_region(st.transform, params.float(), images.shape[2:], align_corners=st.align_corners)
    tps = st.transform.name == "tps"
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.0 * 2 * ncols, 2.1 * nrows + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(nrows, 2 * ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, ncols)
        ax_in, ax_out = axes[r, 2 * c], axes[r, 2 * c + 1]
        _imshow(ax_in, images[i])
        h, w = images.shape[2:]
        ax_in.plot(regions[i, :, 0], regions[i, :, 1], color="tab:red", lw=1.2)
        if tps:
            cp = params[i].reshape(-1, 2).float()  # (K, 2) source positions of the control points
            cp_px = denormalize_points(cp, (h, w), st.align_corners)
            ax_in.scatter(cp_px[:, 0], cp_px[:, 1], s=6, color="tab:orange", zorder=3)
        ax_in.set_xlim(-0.5, w - 0.5)
        ax_in.set_ylim(h - 0.5, -0.5)
        _imshow(ax_out, warped[i])
        if preds is not None and labels is not None:
            ok = bool(preds[i] == labels[i])
            ax_out.set_title(f"pred {int(preds[i])}", fontsize=8, color="black" if ok else "tab:red")
        ax_in.set_title("input" if i < ncols else "", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _imshow(ax: Any, image: Tensor) -> None:
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")


def _test_images(config: Any, n: int, data_dir: str | None) -> tuple[Tensor, Tensor]:
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
    images, labels = _test_images(config, n, data_dir)
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
            images, labels = _test_images(config, n, data_dir)
        title = f"{config.model} ({config.transform}) on {config.dataset.upper()}, step {ckpt.get('global_step', 0)}"
        fig = plot_transformations(lit.model, images, labels, ncols=ncols, title=title)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return out
