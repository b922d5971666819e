"""Shared fixtures: seeds, the real MNIST folder beside the checkout, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path:
    env = os.environ.get("STNKIT_TEST_MNIST")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX folder (../shared/data/mnist beside the checkout, or $STNKIT_TEST_MNIST); read-only."""
    path = _mnist_dir()
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real MNIST not found at {path}; set STNKIT_TEST_MNIST to the folder holding the IDX files")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    return
