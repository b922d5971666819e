"""Street View House Numbers (Netzer et al. 2011): readers of both release formats and the multi-digit preprocessing.

Format 1 (``train/``, ``test/``, ``extra/``: PNGs of whole house-number photos plus ``digitStruct.mat``, a MATLAB
v7.3 file, i.e. HDF5 with object references) is read by :func:`read_digit_struct`; format 2 (the 32x32 single-digit
crops ``train_32x32.mat`` ..., MATLAB v5) by :func:`read_cropped`. Both need the optional ``svhn`` extra
(``pip install stnkit[svhn]``: h5py, scipy); images are decoded with Pillow. :func:`download_svhn` fetches the
release files and checks their published checksums (:data:`SVHN_FILES`) before anything is unpacked.

Preprocessing of the multi-digit experiment (Jaderberg et al. 2015, Sec. 4.2, following Goodfellow et al. 2014):
the union box of a sequence's digits is enlarged by 30 % in x and in y about its centre (15 % of its width/height on
each side, as Goodfellow et al.'s "expand this bounding box by 30 % in both the x and the y direction" is commonly
implemented), clipped to the photo, cropped and resized to 64x64 (:data:`PRESETS` ``"64"``). The paper's looser
128x128 variant is not specified further; ours (``"128"``) enlarges the box by 160 % (so the digits keep their 64x64
size in pixels and the crop holds twice the context). Augmentation: Goodfellow et al. resize to 64x64 and train on
random 54x54 crops (``image_size=64, crop_size=54``); the STN paper feeds 64x64 images, so by default no crop is
taken; ``image_size=76, crop_size=64`` is Goodfellow's 54/64 ratio at the STN's input size. Sequences of more than
five digits are dropped (:attr:`SVHNSequences.num_dropped`), as both papers do.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from stnkit.data import rng
from stnkit.data.idx import DataError

__all__ = ["MAX_DIGITS", "NO_DIGIT", "PRESETS", "SVHN_FILES", "SVHNSequences", "crop_box", "crop_resize",
           "download_svhn", "encode_digits", "fetch_verified", "read_cropped", "read_digit_struct", "union_box"]

#: Longest sequence kept; longer ones are dropped (Goodfellow et al. 2014).
MAX_DIGITS = 5
#: Target class of a position past the sequence's end (the 11th class of each digit head).
NO_DIGIT = 10
#: Crop presets: output side and box enlargement (fraction of the union box's width/height added in total).
PRESETS: dict[str, dict[str, Any]] = {"64": {"image_size": 64, "expand": 0.3},
                                      "128": {"image_size": 128, "expand": 1.6}}
#: name -> (algorithm, digest) of the release files at :data:`SVHN_URL`: the 32x32 files' MD5s as torchvision checks
#: them, the format-1 archives' SHA-256 as python-doctr does; ``extra.tar.gz`` has no published digest (None).
SVHN_FILES: dict[str, tuple[str, str | None]] = {
    "train.tar.gz": ("sha256", "4b17bb33b6cd8f963493168f80143da956f28ec406cc12f8e5745a9f91a51898"),
    "test.tar.gz": ("sha256", "57ac9ceb530e4aa85b55d991be8fc49c695b3d71c6f6a88afea86549efde7fb5"),
    "extra.tar.gz": ("sha256", None),
    "train_32x32.mat": ("md5", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": ("md5", "eb5a983be6a315427106f1b164d9cef3"),
    "extra_32x32.mat": ("md5", "a93ce644f1a588dc4d68dda5feec44a7"),
}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_CHUNK = 1 << 20
_FIELDS = ("label", "left", "top", "width", "height")
_CROP = 201  # RNG stream of the random crop offsets


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"reading SVHN needs {module}: pip install stnkit[svhn]") from err


def _h5_field(f: Any, group: Any, name: str, path: Path, i: int) -> np.ndarray:
    """Return one bbox field of image i as a float64 vector (K,), from its scalar or its reference form."""
    h5py = _import("h5py")
    if name not in group:
        raise DataError(f"{path}: digitStruct/bbox entry {i} has no field {name!r}; expected {', '.join(_FIELDS)}")
    data = group[name]
    if data.dtype == h5py.ref_dtype:  # K > 1 digits: (K, 1) references to (1, 1) doubles
        values = []
        for ref in np.asarray(data[()]).reshape(-1):
            value = np.asarray(f[ref][()]).reshape(-1)
            if value.size != 1:
                raise DataError(f"{path}: digitStruct/bbox entry {i} field {name!r} refers to {value.size} values; "
                                f"expected one number per digit")
            values.append(float(value[0]))
        return np.asarray(values, dtype=np.float64)
    return np.asarray(data[()], dtype=np.float64).reshape(-1)  # one digit: a (1, 1) double


def read_digit_struct(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """Read SVHN format 1's ``digitStruct.mat`` (MATLAB v7.3 = HDF5) into per-image digit boxes.

    ``/digitStruct/name`` holds (N, 1) references to uint16 character arrays, ``/digitStruct/bbox`` (N, 1)
    references to groups with fields ``label``, ``left``, ``top``, ``width``, ``height``: each a (1, 1) double for an
    image with one digit, or (K, 1) references to (1, 1) doubles for K digits.

    Args:
        path: the ``digitStruct.mat`` file.

    Returns:
        For every image in file order, ``(filename, boxes)`` with ``boxes`` float64 of shape (K, 5): ``(label,
        left, top, width, height)``, pixels (left/top of the photo's top-left pixel = 0 edge as in the file),
        labels as digits 0-9 (the file's 10 is the digit 0).

    Raises:
        DataError: missing file, not HDF5, missing datasets or fields, fields of different lengths, labels outside
            1-10, or a different number of names and boxes.
        ImportError: h5py is not installed.

    Example:
        >>> read_digit_struct("missing/digitStruct.mat")
        Traceback (most recent call last):
        ...
        stnkit.data.idx.DataError: missing/digitStruct.mat: no such file; expected SVHN's digitStruct.mat ...
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected SVHN's digitStruct.mat (format 1, inside train/, test/ or "
                        f"extra/)")
    h5py = _import("h5py")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not an HDF5 file (MATLAB v7.3) as SVHN's digitStruct.mat is ({err})") from err
    with f:
        if "digitStruct/name" not in f or "digitStruct/bbox" not in f:
            raise DataError(f"{path}: lacks /digitStruct/name or /digitStruct/bbox; not an SVHN digitStruct.mat")
        names, bboxes = f["digitStruct/name"], f["digitStruct/bbox"]
        if names.dtype != h5py.ref_dtype or bboxes.dtype != h5py.ref_dtype:
            raise DataError(f"{path}: /digitStruct/name and /digitStruct/bbox must hold object references")
        name_refs, bbox_refs = np.asarray(names[()]).reshape(-1), np.asarray(bboxes[()]).reshape(-1)
        if name_refs.size != bbox_refs.size:
            raise DataError(f"{path}: {name_refs.size} names but {bbox_refs.size} bbox entries")
        out = []
        for i, (name_ref, bbox_ref) in enumerate(zip(name_refs, bbox_refs)):
            chars = np.asarray(f[name_ref][()]).reshape(-1)
            group = f[bbox_ref]
            if not isinstance(group, h5py.Group):
                raise DataError(f"{path}: digitStruct/bbox entry {i} is not a struct of label/left/top/width/height")
            cols = [_h5_field(f, group, name, path, i) for name in _FIELDS]
            if len({c.size for c in cols}) != 1 or cols[0].size == 0:
                raise DataError(f"{path}: digitStruct/bbox entry {i} has fields of lengths "
                                f"{[c.size for c in cols]}; expected one equal, non-zero length")
            boxes = np.stack(cols, axis=1)  # (K, 5)
            labels = boxes[:, 0]
            if not np.all((labels >= 1) & (labels <= 10) & (labels == np.round(labels))):
                raise DataError(f"{path}: digitStruct/bbox entry {i} has labels {labels.tolist()}; expected 1-10")
            boxes[:, 0] = labels % 10  # the file's 10 is the digit 0
            out.append(("".join(chr(int(c)) for c in chars), boxes))
    return out


def read_cropped(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Read SVHN format 2 (``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``; MATLAB v5).

    Args:
        path: the ``.mat`` file, holding ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) with labels 1-10.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,) digits 0-9 (the file's 10 is the digit 0).

    Raises:
        DataError: missing or unreadable file, missing ``X``/``y``, wrong shapes or dtypes, labels outside 1-10.
        ImportError: scipy is not installed.

    Example:
        >>> read_cropped("missing_32x32.mat")
        Traceback (most recent call last):
        ...
        stnkit.data.idx.DataError: missing_32x32.mat: no such file; expected SVHN's train_32x32.mat, ...
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected SVHN's train_32x32.mat, test_32x32.mat or extra_32x32.mat")
    sio = _import("scipy.io")

    try:
        mat = sio.loadmat(path)
    except (sio.matlab.MatReadError, ValueError, OSError, TypeError, NotImplementedError) as err:  # v7.3: NotImpl.
        raise DataError(f"{path}: not a MATLAB v5 file as SVHN's 32x32 files are ({err})") from err
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: lacks X or y; expected SVHN's X (32, 32, 3, N) and y (N, 1)")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X is {x.dtype} {x.shape}; expected uint8 (32, 32, 3, N)")
    if y.size != x.shape[3] or y.ndim != 2 or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: y has shape {y.shape} for {x.shape[3]} images; expected ({x.shape[3]}, 1)")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path}: y holds labels {labels.min()}..{labels.max()}; expected 1-10")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (N, 3, 32, 32): (H, W, C, N) -> NCHW
    return images, torch.from_numpy(labels % 10)


def union_box(boxes: np.ndarray) -> tuple[float, float, float, float]:
    """Return the union ``(left, top, right, bottom)`` of digit boxes (K, 5) ``(label, left, top, width, height)``.

    Example:
        >>> union_box(np.array([[1, 10, 5, 8, 20], [2, 20, 3, 9, 21]]))
        (10.0, 3.0, 29.0, 25.0)
    """
    left, top = boxes[:, 1], boxes[:, 2]
    return (float(left.min()), float(top.min()), float((left + boxes[:, 3]).max()),
            float((top + boxes[:, 4]).max()))


def crop_box(boxes: np.ndarray, image_size: tuple[int, int], expand: float = 0.3) -> tuple[int, int, int, int]:
    """Return the crop of a digit sequence: its union box enlarged by ``expand`` about its centre, clipped.

    Args:
        boxes: (K, 5) ``(label, left, top, width, height)`` from :func:`read_digit_struct`.
        image_size: (H, W) of the photo.
        expand: fraction of the union box's width (height) added in x (y), half on each side (Goodfellow et al.'s
            30 %).

    Returns:
        ``(left, top, right, bottom)`` whole pixels, right/bottom exclusive, inside the photo and non-empty.

    Example:
        >>> crop_box(np.array([[1, 10, 5, 8, 20], [2, 20, 3, 9, 21]]), (40, 60))
        (7, 0, 32, 29)
    """
    left, top, right, bottom = union_box(boxes)
    dx, dy = expand * (right - left) / 2, expand * (bottom - top) / 2
    h, w = image_size
    x0 = min(max(int(np.floor(left - dx)), 0), w - 1)
    y0 = min(max(int(np.floor(top - dy)), 0), h - 1)
    x1 = max(min(int(np.ceil(right + dx)), w), x0 + 1)
    y1 = max(min(int(np.ceil(bottom + dy)), h), y0 + 1)
    return x0, y0, x1, y1


def crop_resize(image: Any, box: tuple[int, int, int, int], size: int) -> Tensor:
    """Crop a PIL image to ``box`` and resize it (bilinear) to ``size`` x ``size``.

    Args:
        image: a ``PIL.Image`` (converted to RGB).
        box: ``(left, top, right, bottom)`` pixels, right/bottom exclusive.
        size: S.

    Returns:
        float32 (3, S, S) in [0, 1].
    """
    resampling = _import("PIL.Image").Resampling
    crop = image.convert("RGB").crop(box).resize((size, size), resampling.BILINEAR)
    return torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0  # (3, S, S)


def encode_digits(labels: Sequence[int], max_digits: int = MAX_DIGITS) -> tuple[Tensor, Tensor]:
    """Return ``(length, digits)`` targets: int64 scalar and (max_digits,) padded with :data:`NO_DIGIT`.

    Example:
        >>> encode_digits([1, 9])
        (tensor(2), tensor([ 1,  9, 10, 10, 10]))
    """
    if len(labels) > max_digits:
        raise ValueError(f"a sequence of {len(labels)} digits does not fit {max_digits} positions")
    digits = torch.full((max_digits,), NO_DIGIT, dtype=torch.int64)
    digits[:len(labels)] = torch.as_tensor([int(v) for v in labels], dtype=torch.int64)
    return torch.tensor(len(labels)), digits


class SVHNSequences(Dataset):
    """SVHN format 1 as multi-digit sequences: cropped, resized photos with (length, digits) targets.

    Args:
        root: the folder holding ``train/``, ``test/`` and ``extra/`` (each with PNGs and ``digitStruct.mat``).
        split: ``"train"``, ``"test"`` or ``"extra"``.
        image_size: side the crop is resized to (see :data:`PRESETS`).
        expand: union-box enlargement (0.3: Goodfellow et al.).
        crop_size: side of a square crop of the resized image (Goodfellow et al.: 54 of 64); None for none.
        random_crop: random crop offsets (training; a pure function of (seed, split, epoch, index)), else centred.
        seed: RNG seed of the random crops.

    Items are ``(image, length, digits)``: float32 (3, S, S) in [0, 1] (S = ``crop_size or image_size``), int64
    scalar 1-5, int64 (5,) with :data:`NO_DIGIT` past the end. :attr:`num_dropped` counts the sequences of more
    than five digits left out.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 64, expand: float = 0.3,
                 crop_size: int | None = None, random_crop: bool = False, seed: int = 0) -> None:
        if split not in ("train", "test", "extra"):
            raise ValueError(f"split must be 'train', 'test' or 'extra'; got {split!r}")
        if crop_size is not None and not 1 <= crop_size <= image_size:
            raise ValueError(f"crop_size must be in [1, image_size={image_size}] or None; got {crop_size}")
        self.folder = Path(root) / split
        records = read_digit_struct(self.folder / "digitStruct.mat")
        self.records = [r for r in records if r[1].shape[0] <= MAX_DIGITS]
        self.num_dropped = len(records) - len(self.records)
        self.split, self.image_size, self.expand = split, int(image_size), float(expand)
        self.crop_size, self.random_crop, self.seed, self.epoch = crop_size, bool(random_crop), int(seed), 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops are drawn."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        pil = _import("PIL.Image")
        name, boxes = self.records[index]
        path = self.folder / name
        try:
            with pil.open(path) as img:
                image = crop_resize(img, crop_box(boxes, (img.height, img.width), self.expand), self.image_size)
        except (OSError, pil.UnidentifiedImageError) as err:
            raise DataError(f"{path}: cannot read the image named in digitStruct.mat ({err})") from err
        if self.crop_size is not None:
            room = self.image_size - self.crop_size
            if self.random_crop:
                key = rng.derive_key(self.seed, self.split, self.epoch)
                u = rng.uniform(key, torch.tensor([index]), 2, _CROP, torch.float64)[0]  # (2,)
                x0, y0 = (int(v) for v in (u * (room + 1)).long().clamp_max(room))
            else:
                x0 = y0 = room // 2
            image = image[:, y0:y0 + self.crop_size, x0:x0 + self.crop_size]  # (3, crop, crop)
        length, digits = encode_digits(boxes[:, 0].astype(np.int64).tolist())
        return image, length, digits

    def __repr__(self) -> str:
        return (f"SVHNSequences(n={len(self)}, split={self.split!r}, image_size={self.image_size}, "
                f"crop_size={self.crop_size}, dropped={self.num_dropped})")


def fetch_verified(url: str, dest: str | os.PathLike, algorithm: str, digest: str | None,
                   opener: Callable = urllib.request.urlopen) -> Path:
    """Download ``url`` to ``dest`` in bounded memory, check its digest, and only then rename it into place.

    Args:
        url: any URL ``opener`` serves (``file://`` too).
        dest: the final path; a temporary ``.part`` file beside it holds the download until it is verified.
        algorithm: a :mod:`hashlib` name (``"md5"``, ``"sha256"``).
        digest: the expected hex digest, or None to accept the file unverified.
        opener: ``urlopen``-like callable, ``opener(url, timeout=...)`` returning a binary file object.

    Returns:
        ``dest``.

    Raises:
        DataError: the download failed or its digest differs (nothing is left under ``dest``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.new(algorithm)
        with os.fdopen(fd, "wb") as out, opener(url, timeout=60) as response:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest is not None and h.hexdigest() != digest:
            raise DataError(f"{url}: checksum mismatch ({algorithm} {h.hexdigest()}, expected {digest}); the "
                            f"download is corrupt or not SVHN's file")
        os.replace(tmp, dest)
        return dest
    except OSError as err:  # URLError is an OSError
        raise DataError(f"{url}: download failed ({err})") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_svhn(root: str | os.PathLike, names: Sequence[str] = ("train.tar.gz", "test.tar.gz"),
                  base_url: str = SVHN_URL, opener: Callable = urllib.request.urlopen) -> Path:
    """Download SVHN release files into ``root``, verified against :data:`SVHN_FILES`; archives are unpacked.

    Files (or, for archives, their ``train/`` ... folder with its ``digitStruct.mat``) already present are kept.
    Archives are extracted with tarfile's ``"data"`` filter (no paths outside ``root``, no links out).

    Args:
        root: destination folder: afterwards it holds ``train/`` ... and/or ``*_32x32.mat``, the ``data_dir``
            of :class:`SVHNSequences` and :func:`read_cropped`.
        names: keys of :data:`SVHN_FILES`.
        base_url: where the files are served.
        opener: ``urlopen``-like callable.

    Returns:
        ``root``.

    Raises:
        DataError: unknown name, failed download, checksum mismatch or unreadable archive.
    """
    root = Path(root)
    for name in names:
        if name not in SVHN_FILES:
            raise DataError(f"unknown SVHN file {name!r}; expected one of {', '.join(SVHN_FILES)}")
        algorithm, digest = SVHN_FILES[name]
        if name.endswith(".tar.gz"):
            folder = root / name.removesuffix(".tar.gz")
            if (folder / "digitStruct.mat").is_file():
                continue
            archive = fetch_verified(base_url.rstrip("/") + "/" + name, root / name, algorithm, digest, opener)
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    _safe_extract(tar, root)
            except (tarfile.TarError, OSError) as err:
                raise DataError(f"{archive}: cannot unpack ({err}); delete it and download again") from err
            archive.unlink()
        elif not (root / name).is_file():
            fetch_verified(base_url.rstrip("/") + "/" + name, root / name, algorithm, digest, opener)
    return root


def _safe_extract(tar: tarfile.TarFile, root: Path) -> None:
    """Unpack regular files and folders inside ``root`` only (the ``"data"`` filter where Python has it)."""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12
        tar.extractall(root, filter="data")
        return
    base = root.resolve()
    for member in tar.getmembers():
        target = (base / member.name).resolve()
        if not (member.isfile() or member.isdir()) or base not in (target, *target.parents):
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    tar.extractall(root)
