"""Exceptions of training (importable without Lightning, so the CLI can catch them cheaply)."""

from __future__ import annotations

import signal

__all__ = ["NonFiniteLossError", "RunInterrupted"]


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite; the run stops instead of training on garbage."""


class RunInterrupted(RuntimeError):
    """Raised by ``fit`` when SIGTERM or SIGINT stopped training; the run directory holds a resumable checkpoint.

    Args:
        signum: the signal.
        step: the optimiser step the checkpoint holds.
        checkpoint: the checkpoint file the run resumes from.
        saved: whether ``checkpoint`` was written at the signal (else it is the last validation's).

    Attributes:
        exit_status: ``128 + signum``, the status a shell reports for a process ended by that signal.
        hint: how to resume, in the words of the command that ran ``fit`` (the CLI prints it).
    """

    def __init__(self, signum: int, step: int, checkpoint: str, saved: bool = True) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_status = 128 + signum
        self.hint: str | None = None  # how to go on, set by the command that knows its own spelling
        kept = f"checkpoint saved: {checkpoint}" if saved else f"the last validation's checkpoint is {checkpoint}"
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; {kept}")
