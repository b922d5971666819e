"""Tiny runs on the MNIST-like data, shared by the training tests."""

from __future__ import annotations

import pytest
import torch

from stnkit.training import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models run best on one thread, and on a shared machine more threads than free cores make OpenMP spin
    # (10x slower); fit() leaves the thread count to its caller, as here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_config(mnist_dir, tmp_path):
    """Return a factory of seconds-long RTS configs on a few hundred MNIST-like digits."""

    def make(**kw) -> TrainConfig:
        base = {
            "dataset": "rts", "model": "st-cnn", "recipe": "smoke", "data_dir": str(mnist_dir),
            "out": str(tmp_path / "run"), "train_subset": 200, "val_subset": 32, "test_subset": 48,
            "progress": False, "param_budget": 20_000, "accelerator": "cpu", "threads": 1,
        }
        base.update(kw)
        return TrainConfig(**base)

    return make
