"""Data: the MNIST IDX reader/downloader, the distorted-MNIST generators and datasets, and a Lightning module.

``import stnkit.data`` loads torch only; :class:`DistortedMNISTDataModule` (Lightning) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stnkit.data.distorted_mnist import (
    KINDS,
    PRESETS,
    DistortedBatch,
    DistortedMNIST,
    DistortionConfig,
    EpochSampler,
    distort,
    distortion_config,
    ink_boxes,
    measure_rate,
    render,
    sample_params,
)
from stnkit.data.idx import DataError, cache_dir, download_mnist, find_mnist, load_mnist, read_idx

if TYPE_CHECKING:
    from stnkit.data.datamodule import DistortedMNISTDataModule

__all__ = [
    "KINDS",
    "PRESETS",
    "DataError",
    "DistortedBatch",
    "DistortedMNIST",
    "DistortedMNISTDataModule",
    "DistortionConfig",
    "EpochSampler",
    "cache_dir",
    "distort",
    "distortion_config",
    "download_mnist",
    "find_mnist",
    "ink_boxes",
    "load_mnist",
    "measure_rate",
    "read_idx",
    "render",
    "sample_params",
]


def __getattr__(name: str) -> Any:
    if name == "DistortedMNISTDataModule":  # lazy: Lightning is imported only when the data module is used
        from stnkit.data.datamodule import DistortedMNISTDataModule

        return DistortedMNISTDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
