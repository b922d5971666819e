"""Data: the MNIST IDX reader/downloader, the distorted-MNIST generators and datasets, SVHN readers, Lightning modules.

``import stnkit.data`` loads torch only; the Lightning data modules (:class:`DistortedMNISTDataModule`,
``AdditionDataModule``, ``MNIST3DDataModule``, ``build_datamodule``) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stnkit.data.addition import AdditionMNIST
from stnkit.data.coloc import ColocSet, make_coloc_set
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
from stnkit.data.mnist3d import MNIST3D
from stnkit.data.multidigit import MultiDigitMNIST
from stnkit.data.svhn import SVHNSequences, read_cropped, read_digit_struct

if TYPE_CHECKING:
    from stnkit.data.datamodule import (
        AdditionDataModule,
        DistortedMNISTDataModule,
        MNIST3DDataModule,
        build_datamodule,
    )

__all__ = [
    "KINDS",
    "MNIST3D",
    "PRESETS",
    "AdditionDataModule",
    "AdditionMNIST",
    "ColocSet",
    "DataError",
    "DistortedBatch",
    "DistortedMNIST",
    "DistortedMNISTDataModule",
    "DistortionConfig",
    "EpochSampler",
    "MNIST3DDataModule",
    "MultiDigitMNIST",
    "SVHNSequences",
    "build_datamodule",
    "cache_dir",
    "distort",
    "distortion_config",
    "download_mnist",
    "find_mnist",
    "ink_boxes",
    "load_mnist",
    "make_coloc_set",
    "measure_rate",
    "read_cropped",
    "read_digit_struct",
    "read_idx",
    "render",
    "sample_params",
]


_LAZY = ("AdditionDataModule", "DistortedMNISTDataModule", "MNIST3DDataModule", "build_datamodule")


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # lazy: Lightning is imported only when a data module is used
        from stnkit.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
