"""Exceptions of training (importable without Lightning, so the CLI can catch them cheaply)."""

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite; the run stops instead of training on garbage."""
