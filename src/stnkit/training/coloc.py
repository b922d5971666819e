"""Co-localisation training (Jaderberg et al. 2015, App. A.2): one class's attention transformer, triplet loss.

Given N images that all contain a digit of one class (and nothing else to tell where it is), the transformer is
trained so that its crops of different images embed close together under a frozen encoder, and far from random
crops of the same images: ``sum_n sum_{m != n} max(0, |e(I_n^T) - e(I_m^T)|^2 - |e(I_n^T) - e(I_n^rand)|^2 + 1)``.
No box is ever shown to it; validation scores the attended boxes against the true ones (correct when IoU > 0.5).

:func:`fit_coloc` runs :class:`ColocLitModule` with the Lightning setup of :func:`stnkit.training.fit` (its
loggers, stopwatch and warning filters).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from stnkit.data.coloc import ColocSet, random_crop_params
from stnkit.losses import attended_box, box_iou, triplet_hinge_loss
from stnkit.models import CNN
from stnkit.models.coloc import AttentionWindowHead, CNNEmbedding, coloc_transformer
from stnkit.models.localization import SoftArgmaxWindowHead
from stnkit.sampling import warp
from stnkit.training.callbacks import Stopwatch
from stnkit.training.errors import NonFiniteLossError
from stnkit.training.run import _loggers, _quiet_lightning

__all__ = ["ColocLitModule", "fit_coloc"]


class ColocLitModule(pl.LightningModule):
    """Train an attention transformer on one co-localisation set with the triplet hinge loss.

    Args:
        encoder: the frozen embedding e(.) (e.g. :class:`~stnkit.models.coloc.CNNEmbedding` of a trained CNN).
        input_size: side S of the (S, S) images.
        crop: side of the transformer's output (the encoder's input size).
        init_scale: the window's scale at initialisation (centred; within the step-0 bounds of the schedule).
        scale_range: bounds of the window's scale (the window stays inside the image); None: unbounded.
        margin: alpha of the hinge (1 in the paper).
        lr: Adam's learning rate.
        seed: seed of the random negative crops.
        final_max_scale: where the window's upper scale bound ends (None: it stays ``scale_range[1]``, no
            schedule). The triplet loss asks for consistent crops, not tight ones: measured on T digit 0, every
            window found the digit (94 % contain its centre) but grew to the upper bound 0.6, where no box can reach
            IoU 0.5. The bound therefore moves linearly from ``start_max_scale`` to ``final_max_scale`` (0.38: a
            window a little larger than the 28/84 digit frame) over the first ``anneal`` fraction of the steps.
        start_max_scale: where the upper bound starts (None: ``scale_range[1]``).
        band: the scale is kept within ``band`` below the upper bound (the lower bound follows the upper one),
            so the windows zoom in from ``start_max_scale`` to ``final_max_scale`` instead of choosing their size.
            None: the lower bound stays ``scale_range[0]``. Why, measured on T (1,000 steps): with a free scale
            from a centred 0.5 window, the windows of thin digits (digit 1) shrank onto empty background within
            25 steps, where every crop looks alike and the sampler has no gradient back to the ink (0 % correct);
            zooming in from the whole image (``start_max_scale`` 1, ``band`` 0.05) kept the digit's centre in
            97-100 % of them (35 % correct: found, but off-centre). Freeing the scale after the zoom let digit 0's
            windows shrink off their digits (53 % correct, against 74 % with the band kept to the end).
        anneal: fraction of ``steps`` over which the bounds move.
        steps: the optimisation's length (for the annealing schedule).
        localization: ``"paper"`` (the paper's net) or ``"heatmap"`` (score map + soft-argmax); see
            :func:`~stnkit.models.coloc.coloc_transformer`.

    Batches are ``(images (N, 1, S, S), boxes (N, 4))``; the boxes are used for validation only. Logs
    ``train/loss``, ``val/iou`` (mean IoU) and ``val/correct`` (% of images with IoU > 0.5); every validation
    appends ``(step, params (N, 3))`` to :attr:`history`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        input_size: int = 84,
        crop: int = 28,
        init_scale: float = 0.5,
        scale_range: tuple[float, float] | None = (0.25, 0.6),
        margin: float = 1.0,
        lr: float = 1e-2,
        seed: int = 0,
        final_max_scale: float | None = 0.38,
        anneal: float = 0.5,
        steps: int = 1000,
        start_max_scale: float | None = None,
        band: float | None = None,
        localization: str = "paper",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        if final_max_scale is not None and scale_range is not None:
            lo, hi = scale_range
            start = hi if start_max_scale is None else start_max_scale
            if not lo < final_max_scale <= hi:
                raise ValueError(f"final_max_scale must lie in ({lo}, {hi}]; got {final_max_scale}")
            if not lo < start <= hi:
                raise ValueError(f"start_max_scale must lie in ({lo}, {hi}]; got {start_max_scale}")
            if band is not None and band <= 0:
                raise ValueError(f"band must be > 0 (or None); got {band}")
        if not 0 < anneal <= 1:
            raise ValueError(f"anneal must be in (0, 1]; got {anneal}")
        self.final_max_scale = None if scale_range is None else final_max_scale
        self.start_max_scale = None if scale_range is None or start_max_scale is None else float(start_max_scale)
        self.band = None if band is None else float(band)
        self.anneal_steps = max(1, round(anneal * steps))
        self.input_size, self.crop, self.margin, self.lr = int(input_size), int(crop), float(margin), float(lr)
        window_range = scale_range
        if self.final_max_scale is not None:  # the head starts within the schedule's step-0 bounds, at init_scale
            window_range = self.scale_bounds(0)
            if not window_range[0] < init_scale < window_range[1]:
                raise ValueError(f"init_scale must lie within the window's bounds at step 0, ({window_range[0]:.3g}, "
                                 f"{window_range[1]:.3g}); got {init_scale}")
        self.transformer = coloc_transformer(input_size, crop=crop, scale_range=window_range, init_scale=init_scale,
                                             localization=localization)
        self.encoder = encoder
        self.encoder.requires_grad_(False)
        self._generator = torch.Generator().manual_seed(seed)
        self.history: list[tuple[int, Tensor]] = []

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the crops (N, 1, crop, crop) and attention parameters (N, 3) of images (N, 1, S, S)."""
        return self.transformer(x, return_params=True)

    def scale_bounds(self, step: int) -> tuple[float, float]:
        """The window's (lower, upper) scale bounds at optimisation step ``step`` (see ``band``)."""
        lo, top = (float(v) for v in self.hparams["scale_range"] or (0.0, 1.0))
        if self.final_max_scale is None:  # no schedule: the head's own range
            return lo, top
        start = top if self.start_max_scale is None else self.start_max_scale
        f = min(1.0, step / self.anneal_steps)
        hi = start + (self.final_max_scale - start) * f
        if self.band is not None:
            lo = max(lo, hi - self.band)
        return lo, hi

    def max_scale(self, step: int) -> float:
        """The window's upper scale bound at optimisation step ``step`` (linear from ``start_max_scale``)."""
        return self.scale_bounds(step)[1]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.final_max_scale is not None:  # set only with a scale range, i.e. a window head with lo/hi bounds
            head = self.transformer.head
            assert isinstance(head, (AttentionWindowHead, SoftArgmaxWindowHead))
            head.lo, head.hi = self.scale_bounds(self.global_step)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0]
        n, s, crop = x.shape[0], self.input_size, self.crop
        crops, _ = self(x)
        negatives = random_crop_params(n, crop, s, self._generator).to(x)  # (N, 3): I^rand, a fresh draw per step
        with torch.no_grad():  # the random crops do not depend on the transformer: no graph needed
            rand = self.encoder(warp(x, negatives, "attention", (crop, crop)))  # (N, D)
        loss = triplet_hinge_loss(self.encoder(crops), rand, self.margin)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"co-localisation loss became {loss.item()} at step {self.global_step}; "
                                     f"try a lower lr (now {self.lr})")
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, boxes = batch[0], batch[1]
        _, params = self(x)
        iou = box_iou(attended_box("attention", params, x.shape[2:]), boxes.to(params.dtype))  # (N,)
        self.history.append((int(self.global_step), params.detach().cpu()))
        self.log("val/iou", iou.mean(), batch_size=x.shape[0])
        self.log("val/correct", (iou > 0.5).float().mean() * 100.0, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.transformer.parameters(), lr=self.lr)


def fit_coloc(
    coloc_set: ColocSet,
    encoder: nn.Module,
    *,
    steps: int = 1000,
    eval_every: int = 100,
    lr: float = 1e-2,
    init_scale: float = 0.5,
    scale_range: tuple[float, float] | None = (0.25, 0.6),
    seed: int = 0,
    final_max_scale: float | None = 0.38,
    anneal: float = 0.5,
    start_max_scale: float | None = None,
    band: float | None = None,
    localization: str = "paper",
    out: str | Path | None = None,
    progress: bool = False,
    accelerator: str = "cpu",
) -> dict[str, Any]:
    """Optimise the attention transformer of one co-localisation set (full batch) and score its boxes.

    Args:
        coloc_set: the images and true boxes of one class (:func:`stnkit.data.make_coloc_set`).
        encoder: the frozen embedding; a :class:`~stnkit.models.CNN` is wrapped in
            :class:`~stnkit.models.coloc.CNNEmbedding`.
        steps: optimiser steps (each on the whole set).
        eval_every: steps between box evaluations (also the points of the box history).
        lr: Adam's learning rate.
        init_scale: initial (centred) window scale.
        scale_range: bounds of the window's scale (None: unbounded, the plain identity-initialised regression).
        seed: seed of the weights and the negative crops.
        final_max_scale: where the window's upper scale bound ends (:class:`ColocLitModule`); None: fixed.
        anneal: fraction of the steps over which the bound shrinks.
        start_max_scale: where the upper bound starts (None: ``scale_range[1]``).
        band: how far below the moving upper bound the scale may go (None: down to ``scale_range[0]``);
            :class:`ColocLitModule` says why a band is needed.
        localization: ``"paper"`` or ``"heatmap"`` (:func:`~stnkit.models.coloc.coloc_transformer`).
        out: folder for Lightning's logs (None: no logs).
        progress: show a progress bar.
        accelerator: Lightning accelerator.

    Returns:
        ``correct`` (% IoU > 0.5) and ``iou`` (mean) of the final boxes, ``centre_hit`` (% of boxes containing
        the digit's centre: localised, if perhaps off-centre), per-image ``ious``, final ``boxes`` and
        ``true_boxes`` (N, 4 lists), ``history`` (``[{"step", "params" (N x 3)}]``), ``steps``, ``train_s``.
    """
    if isinstance(encoder, CNN):
        encoder = CNNEmbedding(encoder)
    pl.seed_everything(seed, workers=True, verbose=False)
    images, boxes = coloc_set.images, coloc_set.boxes
    lit = ColocLitModule(encoder, input_size=images.shape[-1], init_scale=init_scale, scale_range=scale_range, lr=lr,
                         seed=seed, final_max_scale=final_max_scale, anneal=anneal, steps=steps,
                         start_max_scale=start_max_scale, band=band, localization=localization)
    data = TensorDataset(images, boxes)
    train = DataLoader(data, batch_size=len(data), shuffle=False)
    val = DataLoader(data, batch_size=len(data), shuffle=False)
    stopwatch = Stopwatch()
    trainer = pl.Trainer(
        max_steps=steps, max_epochs=-1, val_check_interval=None, check_val_every_n_epoch=eval_every,
        num_sanity_val_steps=0, accelerator=accelerator, devices=1, logger=_loggers(Path(out)) if out else False,
        callbacks=[stopwatch], enable_progress_bar=progress, enable_model_summary=False, enable_checkpointing=False,
        log_every_n_steps=max(1, min(50, eval_every)), default_root_dir=out,
    )
    t0 = time.perf_counter()
    with _quiet_lightning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen encoder, on purpose
        trainer.validate(lit, val, verbose=False)  # the boxes at step 0
        trainer.fit(lit, train, val)
        if not lit.history or lit.history[-1][0] != trainer.global_step:
            trainer.validate(lit, val, verbose=False)
    lit.eval()
    with torch.no_grad():
        _, params = lit(images)
        final = attended_box("attention", params, images.shape[2:])
        ious = box_iou(final, boxes)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2) the digit frame's centre
        hit = ((centre >= final[:, :2]) & (centre <= final[:, 2:])).all(dim=1)  # (N,) inside the attended box
    return {
        "digit": coloc_set.digit, "correct": round(float((ious > 0.5).float().mean()) * 100.0, 2),
        "iou": round(float(ious.mean()), 4), "ious": [round(float(v), 4) for v in ious],
        "centre_hit": round(float(hit.float().mean()) * 100.0, 2),
        "boxes": final.tolist(), "true_boxes": boxes.tolist(),
        "history": [{"step": s, "params": p.tolist()} for s, p in lit.history],
        "steps": int(trainer.global_step), "train_s": round(stopwatch.elapsed(), 2),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
