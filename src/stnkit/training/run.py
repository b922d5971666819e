"""The one programmatic entry point of training (``fit``) and of scoring checkpoints (``evaluate``).

Every command that trains (``stnkit train``, ``stnkit demo``, the reproductions) calls :func:`fit`; a run directory
holds ``config.json``, ``logs/metrics.csv`` (a resumed run's earlier parts as ``logs/metrics.<k>.csv``),
``checkpoints/{last,best}.ckpt`` and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stnkit.data.idx import find_mnist
from stnkit.files import LOCK_NAME, FolderLock, FolderLockedError, atomic_write_json
from stnkit.models import count_params
from stnkit.training.callbacks import AtomicCheckpointIO, SaveOnSignal, Snapshots, Stopwatch, ValidateAtEnd
from stnkit.training.config import TrainConfig
from stnkit.training.errors import RunInterrupted
from stnkit.training.lit_module import STNLitModule

__all__ = ["check_checkpoint", "evaluate", "fit", "is_run_dir", "load_checkpoint", "make_datamodule",
           "resolve_checkpoint", "write_json"]

# Lightning hints that do not apply here: generation is batched in the main process (workers only add copies),
# resumed epochs skip the batches already done (the data module's sampler), run directories are ours to reuse.
_QUIET = (
    ".*does not have many workers.*",
    ".*is smaller than the logging interval.*",
    ".*resuming from a checkpoint that ended before the epoch ended.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*Experiment logs directory .* exists and is not empty.*",
    ".*The `srun` command is available.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # Lightning's pytree use under torch >= 2.10
    # DDP testing pads the last batch with repeats of at most world_size - 1 samples (none for 10,000 on 2 or 4)
    ".*Using `DistributedSampler` with the dataloaders. During `trainer.test\\(\\)`.*",
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably (:func:`stnkit.files.atomic_write_json`)."""
    atomic_write_json(path, data)


_RUN_FILES = frozenset({"config.json", "metrics.json", "logs", "checkpoints", "tb", LOCK_NAME})


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` holds a run written by :func:`fit` (its ``config.json`` names a model and a recipe)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"dataset", "model", "recipe"} <= config.keys()


def _check_foreign(run_dir: Path, config: TrainConfig, overwrite: bool) -> None:
    """Refuse, before anything is written, an ``--out`` that holds someone else's files."""
    if config.resume or overwrite or not run_dir.is_dir() or is_run_dir(run_dir):
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in _RUN_FILES or p.name == "config.json")
    if foreign:
        shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise FileExistsError(f"{run_dir} is not empty and not a stnkit run (it holds {shown}); choose another "
                              f"--out, or pass --overwrite to write the run into it")


def _check_existing(run_dir: Path, config: TrainConfig, overwrite: bool) -> None:
    """Refuse (under the run's lock) to resume nothing or a broken checkpoint, or to start over a run."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if config.resume:
        if not last.exists():
            raise FileNotFoundError(f"nothing to resume: {last} does not exist")
        check_checkpoint(last)
    elif not overwrite and last.exists():
        raise FileExistsError(f"{run_dir} already holds a run; resume it (--resume), replace it (--overwrite) or "
                              f"choose another --out")


def _prepare_run_dir(run_dir: Path, config: TrainConfig, overwrite: bool) -> None:
    _check_existing(run_dir, config, overwrite)
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from None
    if overwrite and not config.resume:
        for stale in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.json", "logs/metrics.csv"):
            (run_dir / stale).unlink(missing_ok=True)
        for stale_file in [*(run_dir / "checkpoints" / "history").glob("step-*.ckpt"),
                           *(run_dir / "logs").glob("metrics.*.csv")]:
            stale_file.unlink()


def make_datamodule(config: TrainConfig, batch_size: int, eval_batch_size: int = 500) -> pl.LightningDataModule:
    """Build the data module a config describes (distorted MNIST, addition or 3-D MNIST)."""
    from stnkit.data.datamodule import build_datamodule

    return build_datamodule(
        config.dataset, data_dir=config.data_dir, batch_size=batch_size, val_size=config.val_size,
        seed=config.seed, fresh_train=True, num_workers=config.num_workers, train_subset=config.train_subset,
        val_subset=config.val_subset, test_subset=config.test_subset, eval_batch_size=eval_batch_size,
        distortion=config.distortion,
    )


def fit(
    config: TrainConfig,
    *,
    datamodule: pl.LightningDataModule | None = None,
    callbacks: Sequence[pl.Callback] = (),
    overwrite: bool = False,
    on_start: Callable[[TrainConfig], None] | None = None,
) -> dict[str, Any]:
    """Train a model as ``config`` says, write its run directory and return the final metrics.

    Args:
        config: the run.
        datamodule: data to use instead of the config's distorted MNIST (needs ``image_size``, ``in_channels``,
            ``num_classes``).
        callbacks: extra Lightning callbacks.
        overwrite: replace an existing run in ``config.run_dir()`` instead of refusing.
        on_start: called with the resolved config (its data folder found) once the model is built, the data found
            and the run directory claimed, before anything is trained or written: every bad value has failed by then.

    Returns:
        JSON-ready metrics: ``test_err`` and ``val_err`` (final weights, %), ``best_val_err``, ``steps``,
        ``train_s`` (training seconds, validation excluded; summed over resumed parts), ``wall_s`` (this call,
        validation and testing included), ``params``, the run's
        identity and ``run_dir``; the same dict is written to ``metrics.json``.

    Raises:
        ValueError: unknown dataset/model/transform/recipe values.
        FileNotFoundError: ``resume`` without a checkpoint, or MNIST not found.
        FileExistsError: the run directory holds a run and neither ``resume`` nor ``overwrite`` is set.
        PermissionError: the run directory is not writable.
        FolderLockedError: another process is training into the run directory.
        NonFiniteLossError: the loss became NaN or infinite.
        RunInterrupted: SIGTERM or SIGINT stopped training; ``last.ckpt`` holds the state to resume from.
    """
    t0 = time.perf_counter()
    recipe = config.resolved_recipe()
    run_dir = config.run_dir()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm: Any = datamodule or make_datamodule(config, recipe.batch_size)
    if config.epochs is not None:  # epochs -> steps, from the training loader's length
        dm.prepare_data()
        dm.setup("fit")
        steps = config.epochs * len(dm.train_dataloader())
        config = dataclasses.replace(config, overrides={**config.overrides, "steps": steps}, epochs=None,
                                     extra={**config.extra, "epochs": config.epochs})
        recipe = config.resolved_recipe()
    lit = STNLitModule(config.model, recipe, config.model_arguments(dm.image_size, dm.in_channels, dm.num_classes))
    if datamodule is None:  # fail fast (missing MNIST, subsets larger than the data) before anything is written
        dm.prepare_data()
        dm.setup("fit")
        if config.data_dir is None:  # record the folder found, so evaluate/visualize read the same data later
            config = dataclasses.replace(config, data_dir=str(find_mnist(None, download=False)))
    _check_foreign(run_dir, config, overwrite)
    # one process per run directory; Lightning's DDP workers re-run this code with LOCAL_RANK/NODE_RANK set
    lock = FolderLock(run_dir, "run directory") if os.environ.get("LOCAL_RANK", "0") == "0" and \
        os.environ.get("NODE_RANK", "0") == "0" else None
    if lock is not None:
        try:
            lock.acquire()
        except FolderLockedError:
            raise
        except OSError as e:
            raise PermissionError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from None
    try:
        if on_start is not None:
            on_start(config)
        return _train(config, recipe, lit, dm, run_dir, callbacks, overwrite, t0)
    finally:
        if lock is not None:
            lock.release()


def _train(config: TrainConfig, recipe: Any, lit: STNLitModule, dm: Any, run_dir: Path,
           callbacks: Sequence[pl.Callback], overwrite: bool, t0: float) -> dict[str, Any]:
    _prepare_run_dir(run_dir, config, overwrite)
    info = config.to_dict()
    info["params"] = count_params(lit.model)
    lit.run_info = info

    ckpt_dir = run_dir / "checkpoints"
    # two checkpoints, both rewritten after validations: "best" (lowest val/err) and "last" (the newest state;
    # Lightning's own save_last only follows new bests), written by AtomicCheckpointIO; "last" also at a signal
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/err", mode="min", save_top_k=1,
                                 auto_insert_metric_name=False, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    stopwatch = Stopwatch()
    saver = SaveOnSignal(ckpt_dir / "last.ckpt")
    trainer = pl.Trainer(
        max_steps=recipe.steps, max_epochs=-1, val_check_interval=min(recipe.eval_every, recipe.steps),
        check_val_every_n_epoch=None, num_sanity_val_steps=0, accelerator=config.accelerator,
        devices=config.devices, num_nodes=config.num_nodes, strategy=config.strategy,
        precision=cast(Any, config.precision_used()),
        logger=_loggers(run_dir), callbacks=[checkpoint, last, stopwatch, ValidateAtEnd(),
                                             Snapshots(ckpt_dir / "history"), LearningRateMonitor("step"), saver,
                                             *callbacks],
        enable_progress_bar=config.progress, enable_model_summary=False, log_every_n_steps=10,
        default_root_dir=run_dir, plugins=[AtomicCheckpointIO()],
    )
    if trainer.is_global_zero:
        write_json(run_dir / "config.json", info)
    ckpt_path = str(ckpt_dir / "last.ckpt") if config.resume else None
    with _quiet_lightning():
        try:
            trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:  # a multi-process run, stopped by Lightning in every process
            raise RunInterrupted(signal.SIGTERM, trainer.global_step, str(ckpt_dir / "last.ckpt"),
                                 saved=False) from None
        if saver.signum is not None:  # the signal came during the final validation: trained, not yet tested
            raise RunInterrupted(saver.signum, trainer.global_step, str(ckpt_dir / "last.ckpt"))
        val_err = _metric(trainer, "val/err")
        if val_err is None:  # e.g. resuming a run that had already finished: validate the final weights now
            val_err = round(float(trainer.validate(lit, datamodule=dm, verbose=False)[0]["val/err"]), 4)
        test = trainer.test(lit, datamodule=dm, verbose=False)[0]
    wall_s = time.perf_counter() - t0
    best = checkpoint.best_model_score
    metrics = {
        "dataset": config.dataset, "model": config.model,
        "transform": config.transform if config.model.startswith("st-") else None,
        "recipe": config.recipe, "seed": config.seed,
        "test_err": round(float(test["test/err"]), 4), "test_loss": float(test["test/loss"]),
        "val_err": val_err, "best_val_err": None if best is None else round(float(best), 4),
        "steps": int(trainer.global_step), "epochs": int(trainer.current_epoch),
        "batch_size": recipe.batch_size, "precision": config.precision_used(),
        "train_s": round(stopwatch.elapsed(), 2), "wall_s": round(wall_s, 2),
        "params": info["params"], "world_size": trainer.world_size, "run_dir": str(run_dir),
    }
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def _metric(trainer: pl.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else round(float(value), 4)


def _loggers(run_dir: Path) -> list:
    # Lightning's CSV logger deletes an existing metrics.csv: keep a resumed run's earlier curve as metrics.<k>.csv
    old = run_dir / "logs" / "metrics.csv"
    if old.exists():
        k = len(list(old.parent.glob("metrics.*.csv")))
        old.rename(old.parent / f"metrics.{k}.csv")
    loggers: list = [CSVLogger(run_dir, name="logs", version="")]
    with contextlib.suppress(ImportError, ModuleNotFoundError):  # TensorBoard when installed
        from lightning.pytorch.loggers import TensorBoardLogger
        from lightning.pytorch.loggers.tensorboard import _TENSORBOARD_AVAILABLE

        if _TENSORBOARD_AVAILABLE:
            loggers.append(TensorBoardLogger(run_dir, name="tb", version=""))
    return loggers


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """Return the checkpoint file of a run directory (``last`` or ``best``) or ``path`` itself if it is a file.

    Raises:
        FileNotFoundError: no such file or run.
    """
    p = Path(path)
    if p.is_dir():
        ckpt = p / "checkpoints" / f"{which}.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{p} has no {which} checkpoint ({ckpt} is missing)")
        return ckpt
    if not p.is_file():
        raise FileNotFoundError(f"no run directory or checkpoint at {p}")
    return p


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` and return it (``weights_only=True``: no code is unpickled).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated, not a checkpoint, holds code (refused), or was not written by
            stnkit; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes); delete it, or resume from another run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("stnkit"), dict) or \
            not isinstance(ckpt.get("hyper_parameters"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} is not a checkpoint written by stnkit training")
    return ckpt


def load_checkpoint(path: str | Path, which: str = "last") -> tuple[STNLitModule, TrainConfig, dict[str, Any]]:
    """Load a checkpoint (``weights_only=True``: tensors and plain containers only, no code is unpickled).

    Args:
        path: a run directory or a ``.ckpt`` file written by :func:`fit`.
        which: ``"last"`` or ``"best"`` when ``path`` is a run directory.

    Returns:
        The module with its weights (eval mode, CPU), the run's config, and the raw checkpoint dict.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is not a usable checkpoint written by stnkit (see :func:`check_checkpoint`), its
            hyper-parameters or config are unknown to this version, or its weights do not fit its model.
    """
    ckpt_path = resolve_checkpoint(path, which)
    ckpt = check_checkpoint(ckpt_path)
    try:
        lit = STNLitModule.from_hparams(ckpt["hyper_parameters"])
        config = TrainConfig.from_dict(ckpt["stnkit"]["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {ckpt_path} does not describe a model this stnkit builds: "
                         f"{_first_line(e)}") from None
    try:
        lit.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"checkpoint {ckpt_path}: its weights do not fit its model: {_one_line(e)}") from None
    lit.eval()
    return lit, config, ckpt


def evaluate(
    path: str | Path,
    *,
    which: str = "last",
    data_dir: str | None = None,
    test_subset: int | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    progress: bool = False,
    datamodule: pl.LightningDataModule | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on its dataset's test set.

    Args:
        path: run directory or checkpoint file.
        which: ``"last"`` or ``"best"`` for a run directory.
        data_dir: MNIST folder (default: the run's, then the usual search).
        test_subset: score only this many test images.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        progress: show a progress bar.
        datamodule: data to use instead of the run's.

    Returns:
        ``{"test_err": %, "test_loss", "steps", "checkpoint", "dataset", "model", "transform"}``.
    """
    lit, config, ckpt = load_checkpoint(path, which)
    if data_dir is not None:
        config.data_dir = data_dir
    config.test_subset = test_subset if test_subset is not None else config.test_subset
    dm = datamodule or make_datamodule(config, batch_size=500)
    config.accelerator = accelerator
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_progress_bar=progress,
                         enable_model_summary=False, precision=cast(Any, config.precision_used()))  # as in training
    with _quiet_lightning():
        test = trainer.test(lit, datamodule=dm, verbose=False)[0]
    return {
        "test_err": round(float(test["test/err"]), 4), "test_loss": float(test["test/loss"]),
        "steps": int(ckpt.get("global_step", 0)), "checkpoint": str(resolve_checkpoint(path, which)),
        "dataset": config.dataset, "model": config.model,
        "transform": config.transform if config.model.startswith("st-") else None,
    }
