"""Durable file writes and a per-folder process lock: what keeps run directories whole under kills and full disks.

Every file stnkit writes for later use (checkpoints, ``config.json``, ``metrics.json``, result tables) goes through
:func:`atomic_write_bytes`: a temporary file in the target's own folder (so the final rename never crosses a
filesystem), written, flushed and ``fsync``-ed, renamed over the target, and the folder ``fsync``-ed. A kill, a full
disk or a power loss at any point leaves either the previous file or the new one, never a mixture, and the
temporary file is removed on every error that Python sees.

:class:`FolderLock` is an exclusive ``fcntl.flock`` on ``<folder>/.stnkit.lock``; the kernel releases it when its
holder dies, so a killed run never leaves a stale lock. The file records the holder's pid for the error message.
Where ``fcntl`` is missing (Windows) the lock is a no-op and the writes stay atomic.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; FolderLock then locks nothing, as the module docstring says
    fcntl = None  # type: ignore[assignment]

__all__ = ["FolderLock", "FolderLockedError", "atomic_open", "atomic_torch_save", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text"]

LOCK_NAME = ".stnkit.lock"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file beside it: renamed over ``path`` only when the block ends cleanly.

    On a clean exit the file is flushed, ``fsync``-ed, renamed over ``path`` and the folder ``fsync``-ed; on an
    exception it is removed and ``path`` is unchanged (raise inside the block to discard what was written).

    Args:
        path: the target.
        suffix: ending of the temporary file's name (``.<name>.<random><suffix>``).

    Raises:
        OSError: the folder is not writable or the disk is full; ``path`` is then unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; run files are ordinary shareable files
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably (:func:`atomic_open`).

    Raises:
        OSError: the folder is not writable or the disk is full; ``path`` is then unchanged.
    """
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) as :func:`atomic_write_bytes` does."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Replace ``path`` by ``data`` as indented JSON, as :func:`atomic_write_bytes` does."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` into memory, then :func:`atomic_write_bytes`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class FolderLockedError(OSError):
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive, non-blocking lock on a folder, held from :meth:`acquire` (or ``with``) to :meth:`release`.

    Args:
        folder: the folder (created if missing).
        what: how the error names the folder, e.g. ``"run directory"``.

    Raises:
        FolderLockedError: on acquire, when another process holds it (the message names its pid).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d, FolderLock(d):
        ...     pass
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(f"{self.what} {self.folder} is in use by another stnkit process (pid {holder}); "
                                    f"wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
