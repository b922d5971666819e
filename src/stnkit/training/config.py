"""``TrainConfig``: everything that defines a training run, resolved against a named recipe."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from stnkit.models.mnist import DEFAULT_PARAM_BUDGET
from stnkit.training.recipes import Recipe, get_recipe

__all__ = ["DATASETS", "DOWNSAMPLED_DATASETS", "TrainConfig", "cpu_has_native_bf16"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so bf16 autocast is faster, not slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be conservative
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()

DATASETS = ("plain", "r", "rts", "p", "e", "tc", "addition", "mnist3d")
# the paper halves the transformer's output for RTS and TC (App. A.4); addition's channels are RTS digits too
DOWNSAMPLED_DATASETS = ("rts", "tc", "addition")


@dataclass
class TrainConfig:
    """A training run: data, model, recipe (with per-field overrides), seed, output and hardware.

    Args:
        dataset: distorted-MNIST variant: ``"plain"``, ``"r"``, ``"rts"``, ``"p"``, ``"e"`` or ``"tc"``; or
            ``"addition"`` (two RTS digits, their sum) or ``"mnist3d"`` (posed 3-D slabs), see
            :func:`stnkit.data.build_datamodule`.
        model: registered model name (``"fcn"``, ``"cnn"``, ``"st-fcn"``, ``"st-cnn"``).
        transform: transform of ST models (``"affine"``, ``"projective"``, ``"tps"``, ...).
        recipe: recipe name (``"paper"``, ``"cpu"``, ``"demo"``, ``"smoke"``); the fields below marked
            "override" replace the recipe's value when not None.
        steps: override: optimiser steps.
        epochs: train this many epochs instead (converted to steps from the training set size); excludes ``steps``.
        batch_size: override: training batch size.
        optimizer: override: ``"sgd"``, ``"adam"``, ``"adamw"``.
        lr: override: learning rate.
        momentum: override: SGD momentum.
        weight_decay: override: weight decay.
        scheduler: override: ``"none"``, ``"step"``, ``"cosine"``, ``"onecycle"``.
        loc_lr_scale: override: localisation learning-rate multiplier.
        eval_every: override: steps between validations and checkpoints.
        st_downsample: override: ``"output_size"`` or ``"avgpool"``; applied to ST models on RTS and TC only.
        channels_last: override: channels-last convolutions.
        seed: seed of the weights, the data split and order, and the training distortions.
        data_dir: folder with MNIST's IDX files (default ``$STNKIT_DATA``, then the user cache).
        out: run directory; default ``runs/<dataset>-<model>[-<transform>]-<recipe>-s<seed>``.
        resume: continue from ``<out>/checkpoints/last.ckpt``.
        accelerator: Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``).
        devices: Lightning devices (an int or ``"auto"``).
        num_nodes: Lightning nodes.
        strategy: Lightning strategy (``"auto"``, ``"ddp"``, ...).
        precision: override: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...) or ``"auto"`` (see
            :class:`~stnkit.training.Recipe`).
        threads: torch CPU threads per process; None keeps torch's default (the physical cores).
        val_size: training images held out for validation.
        train_subset: train on this many images only (tests).
        val_subset: validate on this many images only.
        test_subset: test on this many images only.
        num_workers: DataLoader workers (generation is batched and fast; 0 is best on small machines).
        param_budget: parameter budget the model widths are solved for.
        progress: show a progress bar.
        distortion: overrides of the dataset's distortion preset fields, e.g. ``{"canvas_size": 120}``.
        model_kwargs: extra keyword arguments of the model's factory, e.g. ``{"crop": 30}``.
    """

    dataset: str = "rts"
    model: str = "st-cnn"
    transform: str = "affine"
    recipe: str = "cpu"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    loc_lr_scale: float | None = None
    eval_every: int | None = None
    st_downsample: str | None = None
    channels_last: bool | None = None
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    resume: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    threads: int | None = None
    val_size: int = 5000
    train_subset: int | None = None
    val_subset: int | None = None
    test_subset: int | None = None
    num_workers: int = 0
    param_budget: int = DEFAULT_PARAM_BUDGET
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded in config.json
    distortion: dict[str, Any] | None = None
    model_kwargs: dict[str, Any] | None = None

    _OVERRIDES = ("steps", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "scheduler",
                  "loc_lr_scale", "eval_every", "st_downsample", "channels_last", "precision")

    def __post_init__(self) -> None:
        self.dataset = self.dataset.lower()
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")
        self.model = self.model.lower()
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer; got {self.epochs}")

    def resolved_recipe(self) -> Recipe:
        """Return the recipe with this config's overrides applied."""
        return get_recipe(self.recipe, **{k: getattr(self, k) for k in self._OVERRIDES})

    def st_downsample_for_model(self) -> str:
        """Return the ST output downsampling actually used: the recipe's on RTS/TC, ``"none"`` elsewhere."""
        if not self.model.startswith("st-") or self.dataset not in DOWNSAMPLED_DATASETS:
            return "none"
        return self.resolved_recipe().st_downsample

    def run_dir(self) -> Path:
        """Return the run directory."""
        if self.out:
            return Path(self.out)
        parts = [self.dataset, self.model] + ([self.transform] if self.model.startswith("st-") else [])
        return Path("runs") / "-".join([*parts, self.recipe, f"s{self.seed}"])

    def to_dict(self) -> dict[str, Any]:
        """Return the config plus the resolved recipe (``"resolved"``), JSON-ready."""
        d = asdict(self)
        d["resolved"] = self.resolved_recipe().to_dict()
        d["resolved"]["st_downsample_used"] = self.st_downsample_for_model()
        d["resolved"]["precision_used"] = self.precision_used()
        return d

    def precision_used(self) -> str:
        """Return the Lightning precision this run uses (``"auto"`` resolved for this machine)."""
        p = self.resolved_recipe().precision
        if p != "auto":
            return p
        on_cpu = self.accelerator == "cpu" or (self.accelerator == "auto" and not _has_gpu())
        return "bf16-mixed" if on_cpu and cpu_has_native_bf16() else "32-true"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output (unknown keys, e.g. ``"resolved"``, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a run's ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))
