"""``TrainConfig``: everything that defines a training run, resolved against a named recipe."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from stnkit.models.mnist import DEFAULT_PARAM_BUDGET
from stnkit.training.recipes import Recipe, get_recipe, recipe_settings

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


def _fixed(default: Any = None) -> Any:
    """A config field that defines what a run trains: ``--resume`` refuses to change it."""
    return field(default=default, metadata={"fixed": True})


@dataclass(init=False)
class TrainConfig:
    """A training run: data, model, recipe (with per-setting overrides), seed, output and hardware.

    ``TrainConfig(**kw)`` takes the fields below and, by name, every setting of :class:`~stnkit.training.Recipe`
    (``steps``, ``lr``, ``pct_start``, ...; see :func:`~stnkit.training.recipes.recipe_settings`): those not None
    go into ``overrides`` and replace the recipe's value.

    Args:
        dataset: distorted-MNIST variant: ``"plain"``, ``"r"``, ``"rts"``, ``"p"``, ``"e"`` or ``"tc"``; or
            ``"addition"`` (two RTS digits, their sum) or ``"mnist3d"`` (posed 3-D slabs), see
            :func:`stnkit.data.build_datamodule`.
        model: registered model name (``"fcn"``, ``"cnn"``, ``"st-fcn"``, ``"st-cnn"``).
        transform: transform of ST models (``"affine"``, ``"projective"``, ``"tps"``, ...).
        recipe: recipe name (``"paper"``, ``"cpu"``, ``"demo"``, ``"smoke"``).
        overrides: recipe settings replaced for this run, e.g. ``{"lr": 0.1}``.
        epochs: train this many epochs instead (converted to steps from the training set size); excludes ``steps``.
        seed: seed of the weights, the data split and order, and the training distortions.
        data_dir: folder with MNIST's IDX files (default ``$STNKIT_DATA``, then the user cache).
        out: run directory; default ``runs/<dataset>-<model>[-<transform>]-<recipe>-s<seed>``.
        resume: continue from ``<out>/checkpoints/last.ckpt``.
        accelerator: Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``).
        devices: Lightning devices (an int or ``"auto"``).
        num_nodes: Lightning nodes.
        strategy: Lightning strategy (``"auto"``, ``"ddp"``, ...).
        threads: torch CPU threads per process, recorded only: the caller sets them (``stnkit train --threads``
            does); :func:`~stnkit.training.fit` leaves the process-wide thread count alone.
        val_size: training images held out for validation.
        train_subset: train on this many images only (tests).
        val_subset: validate on this many images only.
        test_subset: test on this many images only.
        num_workers: DataLoader workers (generation is batched and fast; 0 is best on small machines).
        param_budget: parameter budget the model widths are solved for.
        progress: show a progress bar.
        extra: free-form notes recorded in config.json.
        distortion: overrides of the dataset's distortion preset fields, e.g. ``{"canvas_size": 120}``.
        model_kwargs: extra keyword arguments of the model's builder, e.g. ``{"crop": 30}``.

    Raises:
        ValueError: an unknown field, dataset, or both ``steps`` and ``epochs``.

    Example:
        >>> TrainConfig(recipe="paper", lr=0.1).resolved_recipe().lr
        0.1
    """

    dataset: str = _fixed("rts")
    model: str = _fixed("st-cnn")
    transform: str = _fixed("affine")
    recipe: str = _fixed("cpu")
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = _fixed()
    seed: int = _fixed(0)
    data_dir: str | None = None
    out: str | None = None
    resume: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    threads: int | None = None
    val_size: int = _fixed(5000)
    train_subset: int | None = _fixed()
    val_subset: int | None = _fixed()
    test_subset: int | None = _fixed()
    num_workers: int = 0
    param_budget: int = _fixed(DEFAULT_PARAM_BUDGET)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    distortion: dict[str, Any] | None = _fixed()
    model_kwargs: dict[str, Any] | None = _fixed()

    def __init__(self, **kwargs: Any) -> None:
        settings = {f.name for f in recipe_settings()}
        overrides = {**(kwargs.pop("overrides", None) or {}),
                     **{k: kwargs.pop(k) for k in [k for k in kwargs if k in settings]}}
        own = {f.name: f for f in fields(self)}
        unknown = sorted(set(kwargs) - set(own))
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}; expected config fields "
                             f"({', '.join(own)}) or recipe settings ({', '.join(sorted(settings))})")
        for name, f in own.items():
            default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
            setattr(self, name, kwargs.get(name, default))
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self.dataset = self.dataset.lower()
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")
        self.model = self.model.lower()
        if "steps" in self.overrides and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer; got {self.epochs}")

    @classmethod
    def fixed_on_resume(cls) -> tuple[str, ...]:
        """Return the fields and recipe settings that define what a run trains (a resumed run keeps them).

        ``steps`` is not among them: a resumed run with a constant schedule may train longer.
        """
        own = tuple(f.name for f in fields(cls) if f.metadata.get("fixed"))
        return own + tuple(f.name for f in recipe_settings() if not f.metadata["resumable"] and f.name != "steps")

    def resolved_recipe(self) -> Recipe:
        """Return the recipe with this config's overrides applied."""
        return get_recipe(self.recipe, **self.overrides)

    def st_downsample_for_model(self) -> str:
        """Return the ST output downsampling actually used: the recipe's on RTS/TC, ``"none"`` elsewhere."""
        if not self.model.startswith("st-") or self.dataset not in DOWNSAMPLED_DATASETS:
            return "none"
        return self.resolved_recipe().st_downsample

    def model_arguments(self, input_size: int, in_channels: int, num_classes: int) -> dict[str, Any]:
        """Return the arguments of this run's model builder, for data of the given image size, channels, classes.

        Every builder takes the data's shape and ``param_budget``; builders with a spatial transformer take
        ``transform`` and the recipe's ``loc_lr_scale`` (:func:`stnkit.models.model_args` says which do);
        ``st_downsample`` is given where :meth:`st_downsample_for_model` uses it; ``model_kwargs`` come last and win.

        Raises:
            ValueError: unknown model or recipe value.
        """
        from stnkit import models

        takes = models.model_args(self.model)
        kw: dict[str, Any] = {"input_size": input_size, "in_channels": in_channels, "num_classes": num_classes,
                              "param_budget": self.param_budget}
        if "transform" in takes:
            kw["transform"] = self.transform
        if "loc_lr_scale" in takes:
            kw["loc_lr_scale"] = self.resolved_recipe().loc_lr_scale
        if self.st_downsample_for_model() != "none":
            kw["st_downsample"] = self.st_downsample_for_model()
        return {**kw, **(self.model_kwargs or {})}

    def run_dir(self) -> Path:
        """Return the run directory."""
        if self.out:
            return Path(self.out)
        parts = [self.dataset, self.model] + ([self.transform] if self.model.startswith("st-") else [])
        return Path("runs") / "-".join([*parts, self.recipe, f"s{self.seed}"])

    def to_dict(self) -> dict[str, Any]:
        """Return the config, each recipe setting's override (None: the recipe's) and the resolved recipe.

        The overrides are top-level keys (``"lr"``, ...), as in runs written before ``overrides`` existed.
        """
        d = asdict(self)
        overrides = d.pop("overrides")
        d.update({f.name: overrides.get(f.name) for f in recipe_settings()})
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
        names = {f.name for f in fields(cls)} | {f.name for f in recipe_settings()}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a run's ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))
