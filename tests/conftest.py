"""Shared fixtures: seeds, generated MNIST-like data, real MNIST when present, the device matrix, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests._mnist_like import write_mnist_like

REPO_ROOT = Path(__file__).resolve().parents[1]

if not torch.cuda.is_available():
    # the Triton kernels (tests/kernels) run under the interpreter; it must be set before anything imports triton,
    # and collecting other tests does (lightning, monai, torch._dynamo)
    os.environ.setdefault("TRITON_INTERPRET", "1")


NOT_MNIST = "ignore:.*not MNIST's \\(SHA-256 differs\\):UserWarning"


def _real_mnist_dir() -> Path:
    env = os.environ.get("STNKIT_TEST_MNIST")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A generated MNIST-like IDX folder (tests/_mnist_like.py: 6,000 train, 2,000 test digits), the same everywhere."""
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The real MNIST IDX folder (../shared/data/mnist beside the checkout, or $STNKIT_TEST_MNIST); skips without it."""
    path = _real_mnist_dir()
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {path} (../shared/data/mnist beside the checkout, or $STNKIT_TEST_MNIST)")
    return path


def pytest_collection_modifyitems(items):
    for item in items:
        if "mnist_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.filterwarnings(NOT_MNIST))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    return


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        action="store",
        default="cpu",
        choices=("cpu", "cuda", "all"),
        help="devices the `device` fixture runs on: cpu (default), cuda, or all (cpu, and cuda when present)",
    )


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        option = metafunc.config.getoption("--device")
        names = ["cpu", "cuda"] if option == "all" else [option]
        metafunc.parametrize("device", names, indirect=True)


@pytest.fixture
def device(request) -> torch.device:
    """The torch device a test runs on, from ``--device`` (cpu, cuda or all); cuda skips when none is present."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda asked for, but no CUDA device is present")
    return torch.device(request.param)
