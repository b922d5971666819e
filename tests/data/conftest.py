"""Fixtures for the data tests: the MNIST-like test split loaded once per session, tiny synthetic IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from stnkit.data.idx import load_mnist


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    """The test images (uint8 (N, 28, 28)) and labels of `mnist_dir`, loaded once."""
    return load_mnist(mnist_dir, split="test")


@pytest.fixture(scope="session")
def digits(mnist_test):
    """2,000 test digits, uint8 (2000, 28, 28), for distortion statistics."""
    return mnist_test[0][:2000]


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file."""
    header = bytes([0, 0, 8, tensor.ndim]) + b"".join(struct.pack(">I", d) for d in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def write_idx(path: Path, tensor: torch.Tensor, compress: bool = True) -> Path:
    """Write ``tensor`` as IDX (gzip-compressed when ``compress``) and return the path."""
    data = idx_bytes(tensor)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def write_fake_mnist(folder: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict[str, bytes]:
    """Write four tiny valid IDX files under MNIST's names; return name -> uncompressed bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        for part, t in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{part}"
            write_idx(folder / f"{name}.gz", t)
            out[name] = idx_bytes(t)
    return out
