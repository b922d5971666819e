"""MNIST in IDX format: a reader, SHA-256 verification, location resolution and an atomic mirror download.

The four files are looked for, in order, in the ``data_dir`` argument, the ``STNKIT_DATA`` environment variable
and the user cache ``$XDG_CACHE_HOME/stnkit/mnist`` (default ``~/.cache/stnkit/mnist``); only the cache is ever
written to. Each of these folders may hold the files directly, in ``mnist/`` or in torchvision's ``MNIST/raw/``,
gzip-compressed (``.gz``) or raw.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import torch
from torch import Tensor

from stnkit.files import atomic_open

__all__ = [
    "MAX_IDX_BYTES",
    "MIRRORS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "DataError",
    "cache_dir",
    "download_mnist",
    "find_mnist",
    "load_mnist",
    "read_idx",
]

#: Uncompressed file names per (split, part).
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

#: SHA-256 of the *uncompressed* canonical MNIST files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Mirrors tried in order; each serves ``<name>.gz``.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_DTYPES: dict[int, np.dtype] = {  # IDX type byte -> big-endian numpy dtype
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_SUBDIRS = ("", "mnist", "MNIST/raw")
_HOW_TO_FIX = ("delete it and let find_mnist() download MNIST into the cache, or replace it with the file from "
               "http://yann.lecun.com/exdb/mnist/ (or a mirror in stnkit.data.idx.MIRRORS)")
_checked_sums: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime_ns) -> is canonical MNIST


class DataError(ValueError):
    """A data file is missing, malformed or not what it should be; the message names the file and the fix."""


#: Largest IDX payload :func:`read_idx` reads by default (1 GiB; MNIST's training images are 47 MB).
MAX_IDX_BYTES = 1 << 30
_CHUNK = 1 << 20


def _open(path: Path) -> BinaryIO:
    """Open the file for streaming, decompressing when its content is gzip (by the magic bytes, not the name)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return cast(BinaryIO, gzip.open(path, "rb")) if gzipped else open(path, "rb")  # noqa: SIM115


def _read_exactly(f: BinaryIO, n: int, path: Path, what: str, digest: Any) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = f.read(min(_CHUNK, n - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    digest.update(data)
    if got < n:
        raise DataError(f"{path}: truncated: {what} needs {n:,} bytes, the file has {got:,}; {_HOW_TO_FIX}")
    return data


def _stream_idx(path: Path, max_bytes: int) -> tuple[Tensor, str]:
    """Parse an IDX file chunk by chunk; return the tensor and the SHA-256 of the (decompressed) content.

    Memory stays within the size the header declares, which is checked against ``max_bytes`` before any payload
    is read; data beyond the declared size is detected by reading one byte more, never decompressed in full.
    """
    digest = hashlib.sha256()
    try:
        with _open(path) as f:
            magic = f.read(4)
            digest.update(magic)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise DataError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'}); {_HOW_TO_FIX}")
            dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
            dims = _read_exactly(f, 4 * ndim, path, f"its {ndim}-D header", digest)
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            payload = math.prod(shape) * dtype.itemsize  # Python integers: no overflow whatever the header says
            if payload > max_bytes:
                raise DataError(f"{path}: its header declares shape {shape} ({payload:,} bytes), more than the "
                                f"limit of {max_bytes:,} bytes (read_idx(max_bytes=...)); {_HOW_TO_FIX}")
            data = _read_exactly(f, payload, path, f"its header's shape {shape}", digest)
            if f.read(1):
                raise DataError(f"{path}: has trailing bytes after the {payload:,} bytes its header {shape} "
                                f"declares; {_HOW_TO_FIX}")
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:  # unreadable, truncated or corrupt gzip
        raise DataError(f"{path}: cannot read or decompress ({err}); {_HOW_TO_FIX}") from err
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True)), digest.hexdigest()


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> Tensor:
    """Read an IDX file (gzip-compressed or raw, detected from the content), streaming with bounded memory.

    Args:
        path: the file.
        max_bytes: refuse files whose header declares a larger payload (checked before reading it).

    Returns:
        Tensor with the shape stored in the header, e.g. (N, 28, 28) uint8 for MNIST images or (N,) for labels.

    Raises:
        DataError: missing file, bad magic number, truncated data, trailing data, a declared size above
            ``max_bytes``, corrupt gzip stream; the message names the file.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "tiny-idx1-ubyte"
        ...     _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))  # magic, count 3, data
        ...     print(read_idx(path))
        tensor([7, 8, 9], dtype=torch.uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return _stream_idx(path, max_bytes)[0]


def _is_new_non_mnist(path: Path, sha256: str, name: str) -> bool:
    """Return True the first time per process that a file (version) turns out not to be canonical MNIST."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _checked_sums:
        return False
    _checked_sums[key] = sha256 == MNIST_SHA256[name]
    return not _checked_sums[key]


def _locate(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(root: str | os.PathLike, split: str = "train", *, verify: bool = True) -> tuple[Tensor, Tensor]:
    """Load one MNIST split from a folder of IDX files.

    Args:
        root: folder holding the four files (``.gz`` or raw), e.g. the result of :func:`find_mnist`.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        verify: compare SHA-256 sums with MNIST's (once per file per process); files that differ are used with a
            one-line warning, so Fashion-MNIST or KMNIST stored under MNIST's names still load.

    Returns:
        ``(images, labels)``: uint8 tensor of shape (N, H, W) (28x28 for MNIST) and int64 tensor of shape (N,).

    Raises:
        DataError: a missing or malformed file, or images and labels of different counts or ranks.
        ValueError: unknown split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    root = Path(root)
    out, unknown = [], []
    for part in ("images", "labels"):
        name = MNIST_FILES[(split, part)]
        path = _locate(root, name)
        if path is None:
            raise DataError(f"{root / name}(.gz): no such file; pass the folder holding MNIST's four IDX files, or "
                            f"call find_mnist() to download them into {cache_dir()}")
        tensor, sha256 = _stream_idx(path, MAX_IDX_BYTES)
        if verify and _is_new_non_mnist(path, sha256, name):
            unknown.append(path.name)
        want = 3 if part == "images" else 1
        if tensor.ndim != want or tensor.dtype != torch.uint8:
            raise DataError(f"{path}: expected {want}-D uint8 {part}, got shape {tuple(tensor.shape)} "
                            f"{tensor.dtype}; {_HOW_TO_FIX}")
        out.append((path, tensor))
    (img_path, images), (lbl_path, labels) = out
    if unknown:
        warnings.warn(f"{root}: {' and '.join(unknown)} not MNIST's (SHA-256 differs); using them anyway (e.g. "
                      f"Fashion-MNIST or KMNIST under MNIST's names)", UserWarning, stacklevel=2)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels; "
                        f"the pair must come from the same release: {_HOW_TO_FIX}")
    return images, labels.to(torch.int64)


def cache_dir() -> Path:
    """Return the user cache folder for MNIST: ``$XDG_CACHE_HOME/stnkit/mnist`` or ``~/.cache/stnkit/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stnkit" / "mnist"


def _complete(folder: Path) -> Path | None:
    """Return the sub-folder of ``folder`` that holds all four files, if any."""
    for sub in _SUBDIRS:
        candidate = folder / sub
        if all(_locate(candidate, name) for name in MNIST_SHA256):
            return candidate
    return None


def find_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the folder holding MNIST's four IDX files, downloading them into the cache if needed.

    Resolution order: ``data_dir``; else ``$STNKIT_DATA``; else the cache (:func:`cache_dir`). An explicit
    ``data_dir`` or ``$STNKIT_DATA`` must hold the files (nothing is written there); only the cache is filled by a
    download. Each folder may hold the files directly, in ``mnist/`` or in ``MNIST/raw/``.

    Args:
        data_dir: explicit folder.
        download: download into the cache when the cache lacks the files.

    Returns:
        The folder holding the four files (pass it to :func:`load_mnist`).

    Raises:
        DataError: an explicit folder lacks files; or the cache lacks them and ``download`` is False or the
            download failed.
    """
    for source, value in (("data_dir", data_dir), ("$STNKIT_DATA", os.environ.get("STNKIT_DATA") or None)):
        if value is not None:
            folder = Path(value).expanduser()
            found = _complete(folder)
            if found is None:
                missing = [n for n in MNIST_SHA256 if not _locate(folder, n)]
                raise DataError(f"{source}={str(folder)!r} lacks MNIST files {', '.join(missing)} (.gz or raw); "
                                f"copy them there, or leave {source} unset to use the cache {cache_dir()}")
            return found
    cache = cache_dir()
    found = _complete(cache)
    if found is not None:
        return found
    if not download:
        raise DataError(f"MNIST not found in the cache {cache}; pass data_dir (--data-dir on the command line) or "
                        f"set STNKIT_DATA to a folder holding the four IDX files, or let find_mnist(download=True) "
                        f"download them into the cache")
    download_mnist(cache)
    return cache


def _copy_and_digest(response: BinaryIO, out: BinaryIO, url: str) -> str:
    """Copy a gzip download to ``out`` chunk by chunk; return the SHA-256 of its decompressed content.

    Decompression runs on the same chunks (bounded memory) and stops at :data:`MAX_IDX_BYTES` of output.
    """
    inflate, digest, size = zlib.decompressobj(wbits=31), hashlib.sha256(), 0
    while chunk := response.read(_CHUNK):
        out.write(chunk)
        while True:
            data = inflate.decompress(chunk, _CHUNK)
            size += len(data)
            if size > MAX_IDX_BYTES:
                raise DataError(f"{url}: decompresses to more than {MAX_IDX_BYTES:,} bytes; not an MNIST file")
            digest.update(data)
            chunk = inflate.unconsumed_tail
            if not chunk and len(data) < _CHUNK:  # a full chunk may leave output pending: ask again
                break
    if not inflate.eof:
        raise DataError(f"{url}: the download ended inside its gzip stream (truncated)")
    return digest.hexdigest()


def download_mnist(
    root: str | os.PathLike,
    mirrors: Sequence[str] | None = None,
    opener: Callable = urllib.request.urlopen,
) -> None:
    """Download MNIST's four ``.gz`` files into ``root``, verifying SHA-256; each file appears atomically.

    Each file is written to a temporary file in ``root``, checked, then renamed into place, so an interrupted
    download never leaves a partial file under the real name. Files already present are kept.

    Args:
        root: destination folder (created if needed).
        mirrors: base URLs tried in order (default :data:`MIRRORS`); ``file://`` URLs work too.
        opener: ``urlopen``-like callable, ``opener(url, timeout=...)`` returning a binary file object.

    Raises:
        DataError: no mirror served a file whose decompressed SHA-256 is MNIST's.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    mirrors = tuple(MIRRORS if mirrors is None else mirrors)
    for name, digest in MNIST_SHA256.items():
        if _locate(root, name):
            continue
        errors = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                with atomic_open(root / f"{name}.gz", suffix=".part") as out, opener(url, timeout=60) as response:
                    got = _copy_and_digest(response, out, url)
                    if got != digest:  # raised inside: the temporary file is discarded
                        raise DataError(f"checksum mismatch (SHA-256 of the decompressed file {got}, expected "
                                        f"{digest})")
                break
            except (OSError, DataError, zlib.error) as err:  # URLError is an OSError
                errors.append(f"{url}: {err}")
        else:
            raise DataError(f"could not download {name}.gz into {root}:\n  " + "\n  ".join(errors) +
                            f"\nDownload the four files by hand into {root}, or pass their folder as data_dir "
                            "(--data-dir on the command line) or STNKIT_DATA.")
