"""Dense displacement fields beside the parametric transforms (warp, integrate, compose, invert, losses, layers).

Convention:
    Fields are channels-first, (N, 2, H, W) or (N, 3, D, H, W); output location p reads the source at p + d(p).
    Every function takes ``units`` (``"normalized"`` [-1, 1] as ``F.grid_sample``, or ``"voxel"`` of the source)
    and ``order`` (``"xy"``: channel 0 along width; ``"ij"``: along the first axis, as MONAI and VoxelMorph), and
    ``align_corners=False`` by default (see :mod:`stnkit.grid`).
"""

from stnkit.fields.algebra import compose, compose_transform, invert
from stnkit.fields.conventions import (
    ORDERS,
    UNITS,
    check_displacement,
    check_field_options,
    convert,
    displacement_to_grid,
    grid_to_displacement,
    ij_to_xy,
    to_normalized,
    to_voxel,
    xy_to_ij,
)
from stnkit.fields.losses import bending_energy, gradient_loss, lncc, mse, normalized_mse
from stnkit.fields.metrics import folding_fraction, jacobian_determinant
from stnkit.fields.modules import AffineDenseCascade, DenseSpatialTransformer
from stnkit.fields.warping import integrate, warp

__all__ = [
    "ORDERS",
    "UNITS",
    "AffineDenseCascade",
    "DenseSpatialTransformer",
    "bending_energy",
    "check_displacement",
    "check_field_options",
    "compose",
    "compose_transform",
    "convert",
    "displacement_to_grid",
    "folding_fraction",
    "gradient_loss",
    "grid_to_displacement",
    "ij_to_xy",
    "integrate",
    "invert",
    "jacobian_determinant",
    "lncc",
    "mse",
    "normalized_mse",
    "to_normalized",
    "to_voxel",
    "warp",
    "xy_to_ij",
]
