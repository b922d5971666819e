"""stnkit: Spatial Transformer Networks (Jaderberg, Simonyan, Zisserman, Kavukcuoglu, NIPS 2015) for PyTorch.

The layer library (grid -> transforms -> sampling -> modules) imports torch only; training (Lightning) and
figures (matplotlib) live in subpackages that are imported on demand.
"""

import importlib
from types import ModuleType

from stnkit import grid, transforms
from stnkit.grid import identity_grid
from stnkit.modules import (
    LocalizationHead,
    ParallelSpatialTransformers,
    SerialSpatialTransformers,
    SpatialTransformer,
    param_groups,
)
from stnkit.sampling import sample, warp
from stnkit.transforms import (
    Affine,
    Affine3D,
    Attention,
    Projective,
    Similarity,
    ThinPlateSpline,
    Transform,
    Translation,
)

__version__ = "0.1.0"

__all__ = [
    "Affine",
    "Affine3D",
    "Attention",
    "LocalizationHead",
    "ParallelSpatialTransformers",
    "Projective",
    "SerialSpatialTransformers",
    "Similarity",
    "SpatialTransformer",
    "ThinPlateSpline",
    "Transform",
    "Translation",
    "__version__",
    "fields",
    "grid",
    "identity_grid",
    "param_groups",
    "sample",
    "transforms",
    "warp",
]


def __getattr__(name: str) -> ModuleType:
    if name == "fields":  # dense displacement fields, imported on first use
        return importlib.import_module("stnkit.fields")
    raise AttributeError(f"module 'stnkit' has no attribute {name!r}")
