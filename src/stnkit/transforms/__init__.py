"""Transformation families: parameters -> sampling grid (output -> source, normalised frame).

``get(name)`` resolves the string names; every family shares the :class:`Transform` interface.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stnkit._checks import check_float, check_tensor, shape_str
from stnkit.transforms.affine import Affine, Attention, Similarity, Translation, affine_grid
from stnkit.transforms.affine3d import Affine3D, affine_grid3d
from stnkit.transforms.base import MatrixTransform, Transform
from stnkit.transforms.projective import Projective, homography_from_points
from stnkit.transforms.tps import ThinPlateSpline, regular_control_points

__all__ = [
    "Affine",
    "Affine3D",
    "Attention",
    "MatrixTransform",
    "Projective",
    "Similarity",
    "ThinPlateSpline",
    "Transform",
    "Translation",
    "affine_grid",
    "affine_grid3d",
    "available",
    "compose",
    "get",
    "homography_from_points",
    "inverse",
    "regular_control_points",
]

_REGISTRY: dict[str, type[Transform]] = {
    cls.name: cls for cls in (Affine, Attention, Translation, Similarity, Projective, ThinPlateSpline, Affine3D)
}


def available() -> list[str]:
    """Return the registered transform names."""
    return list(_REGISTRY)


def get(name: str | Transform | type[Transform], **kwargs: Any) -> Transform:
    """Resolve a transform by name; instances pass through, classes are instantiated.

    Names: ``"affine"``, ``"attention"``, ``"translation"``, ``"similarity"``, ``"projective"``, ``"tps"``,
    ``"affine3d"`` (case-insensitive).

    Args:
        name: registry name, a :class:`Transform` instance or subclass.
        **kwargs: constructor arguments, e.g. ``get("tps", grid_size=8)``.

    Returns:
        A :class:`Transform` instance.

    Raises:
        ValueError: unknown name (the message lists the known ones).

    Example:
        >>> get("tps").num_params
        32
    """
    if isinstance(name, Transform):
        if kwargs:
            raise ValueError("keyword arguments cannot be applied to an existing Transform instance")
        return name
    if isinstance(name, type) and issubclass(name, Transform):
        return name(**kwargs)
    if not isinstance(name, str):
        raise TypeError(f"transform must be a name, a Transform or a Transform subclass; got {type(name).__name__}")
    cls = _REGISTRY.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown transform {name!r}; known transforms: {', '.join(_REGISTRY)}")
    return cls(**kwargs)


def _check_square(m: Tensor, name: str) -> None:
    check_tensor(m, name)
    check_float(m, name)
    if m.ndim != 3 or m.shape[1] != m.shape[2] or m.shape[1] not in (3, 4):
        raise ValueError(f"{name} must be homogeneous matrices of shape (N, 3, 3) or (N, 4, 4); got {shape_str(m)}")


def compose(*matrices: Tensor) -> Tensor:
    """Compose homogeneous output->source matrices: ``compose(a_from_b, b_from_c) = a_from_b @ b_from_c``.

    Args:
        *matrices: matrices of shape (N, 3, 3) or (N, 4, 4) (batch 1 broadcasts), outermost first.

    Returns:
        The product, shape (N, 3, 3) or (N, 4, 4).

    Example:
        >>> compose(torch.eye(3)[None], 2 * torch.eye(3)[None]).shape
        torch.Size([1, 3, 3])
    """
    if not matrices:
        raise ValueError("compose needs at least one matrix")
    for i, m in enumerate(matrices):
        _check_square(m, f"matrices[{i}]")
    out = matrices[0]
    for m in matrices[1:]:
        if m.shape[1:] != out.shape[1:]:
            raise ValueError(f"cannot compose {shape_str(out)} with {shape_str(m)} matrices")
        out = out @ m
    return out


def inverse(matrix: Tensor) -> Tensor:
    """Invert homogeneous matrices (``src_from_dst`` -> ``dst_from_src``), shape (N, 3, 3) or (N, 4, 4).

    Example:
        >>> inverse(2 * torch.eye(3)[None])[0, 0, 0]
        tensor(0.5000)
    """
    _check_square(matrix, "matrix")
    return torch.linalg.inv(matrix)
