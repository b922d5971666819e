"""Callbacks of :func:`stnkit.training.fit` and its checkpoint writer.

A final validation, a training stopwatch, checkpoint snapshots, a checkpoint at SIGTERM/SIGINT, atomic writes.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins import TorchCheckpointIO

from stnkit.files import atomic_torch_save
from stnkit.training.errors import RunInterrupted

__all__ = ["AtomicCheckpointIO", "PrintValidation", "SaveOnSignal", "Snapshots", "Stopwatch", "ValidateAtEnd"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints with :func:`stnkit.files.atomic_torch_save`, so the previous file survives any kill.

    Lightning's own writer copies over the target when the temporary folder is on another filesystem.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


class SaveOnSignal(pl.Callback):
    """On SIGTERM or SIGINT, finish the current step, save ``path`` and stop with :class:`RunInterrupted`.

    A second signal stops at once (``KeyboardInterrupt``). Installed over Lightning's SIGTERM handler when training
    starts, in the main thread of a single-process run only (multi-process runs keep Lightning's handling, which
    stops every process together; ``fit`` reports it the same way, with the last validation's checkpoint).

    Args:
        path: the checkpoint to write (the run's ``last.ckpt``).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.signum is not None:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: optimiser, loops, RNG
            raise RunInterrupted(self.signum, trainer.global_step, str(self.path))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class ValidateAtEnd(pl.Callback):
    """Validate (and so checkpoint) after the last step even when it is not a multiple of the validation interval."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True  # Lightning then runs the validation loop for this step


class Stopwatch(pl.Callback):
    """Measure training time without validation; logs ``time/train_s`` with every validation."""

    def __init__(self) -> None:
        self.train_s = 0.0
        self._start: float | None = None
        self._offset = 0.0  # training time of the run before a resume

    def state_dict(self) -> dict[str, Any]:
        return {"train_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("train_s", 0.0))

    def elapsed(self) -> float:
        """Return the training seconds so far (validation excluded, earlier runs of a resumed run included)."""
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self._offset + self.train_s + running

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None:
            self.train_s += time.perf_counter() - self._start
            self._start = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            pl_module.log("time/train_s", self.elapsed(), sync_dist=True)  # mean over processes

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None:
            self.train_s += time.perf_counter() - self._start
            self._start = None


class Snapshots(pl.Callback):
    """Keep weights-only snapshots ``history/step-XXXXXXX.ckpt`` at the start and after every validation.

    They are small (no optimizer state) and feed ``stnkit visualize --gif``.

    Args:
        dirpath: folder of the snapshots.
    """

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.dirpath / f"step-{trainer.global_step:07d}.ckpt", weights_only=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer)


class PrintValidation(pl.Callback):
    """Print one line per validation (step, validation error, training time): progress for logs and pipes.

    Args:
        prefix: text in front of every line.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        err = m.get("val/err")
        t = m.get("time/train_s")
        print(f"{self.prefix}step {trainer.global_step}/{trainer.max_steps}"
              + (f"  val error {float(err):.2f} %" if err is not None else "")
              + (f"  {float(t):.0f} s" if t is not None else ""), flush=True)
