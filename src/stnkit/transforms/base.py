"""The interface every transformation family shares.

Convention:
    A transform maps *output* (target) locations to *source* locations (Jaderberg et al. 2015, eq. 1), in the
    normalised (x, y[, z]) in [-1, 1] frame of ``F.grid_sample`` (see :mod:`stnkit.grid`). Parameters are flat
    ``(N, P)`` tensors; the transform's ``identity()`` maps every point to itself. Grids are computed in float32
    (float64 when the parameters are float64), also under autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from stnkit._checks import check_float, check_ndim, check_tensor, normalize_size, shape_str

__all__ = ["MatrixTransform", "Transform"]


def grid_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype grids are computed in: float64 stays float64, everything else becomes float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Return a context that disables autocast on ``device`` if it is enabled (grids stay float32).

    Devices without autocast (``meta``, for shape propagation) get a no-op context.
    """
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        return contextlib.nullcontext()
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 has no device argument
        enabled = torch.is_autocast_enabled() if device.type == "cuda" else torch.is_autocast_cpu_enabled()
    return torch.autocast(device.type, enabled=False) if enabled else contextlib.nullcontext()


class Transform(nn.Module):
    """Base class of a parametric spatial transformation (output -> source).

    Subclasses set ``name``, ``num_params`` and ``spatial_dims`` and implement ``_identity``, ``_grid`` and
    ``_transform_points``; the public methods validate shapes once and then call those.

    Attributes:
        name: registry name, e.g. ``"affine"``.
        num_params: P, the number of parameters per sample.
        spatial_dims: 2 for images (N, C, H, W), 3 for volumes (N, C, D, H, W).
    """

    name: ClassVar[str] = ""
    spatial_dims: ClassVar[int] = 2
    num_params: int

    # ----------------------------------------------------------------------------------------------- public API
    def identity(self) -> Tensor:
        """Return the identity parameters, shape (P,), float32."""
        return self._identity().to(torch.float32)

    def grid(
        self, params: Tensor, output_size: int | Sequence[int], align_corners: bool = False, *, fast: bool = True
    ) -> Tensor:
        """Map a regular output grid to source sampling coordinates.

        Args:
            params: transformation parameters, shape (N, P) (matrix families also take their matrix shape).
            output_size: (H_out, W_out), or (D_out, H_out, W_out) for 3-D transforms; an int means a square/cube.
            align_corners: frame convention of the output grid (see :mod:`stnkit.grid`).
            fast: use the transform's fast grid path (analytic backward, kernels); False computes the same grid
                by its reference formula, differentiated by autograd (for tests and benchmarks).

        Returns:
            Grid of shape (N, H_out, W_out, 2) with (x, y), or (N, D_out, H_out, W_out, 3) with (x, y, z), in
            normalised source coordinates, float32 (float64 for float64 params).
        """
        params = self.check_params(params)
        size = normalize_size(output_size, self.spatial_dims)
        with no_autocast(params.device):
            grid_fn = self._grid if fast else self._reference_grid
            return grid_fn(params.to(grid_dtype(params.dtype)), size, bool(align_corners))

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Map normalised output points to normalised source points.

        Args:
            params: transformation parameters, shape (N, P).
            points: output points, shape (M, 2) shared by the batch or (N, M, 2) per sample ((…, 3) for 3-D),
                normalised.

        Returns:
            Source points of shape (N, M, 2) (or (N, M, 3)), normalised.
        """
        params = self.check_params(params)
        check_tensor(points, "points")
        check_float(points, "points")
        d = self.spatial_dims
        layout = f"(M, {d}) or (N, M, {d})"
        check_ndim(points, (2, 3), "points", layout)
        if points.shape[-1] != d:
            raise ValueError(f"points must have shape {layout}; got {shape_str(points)}")
        if points.ndim == 2:
            points = points.unsqueeze(0).expand(params.shape[0], -1, -1)  # (N, M, d)
        elif points.shape[0] != params.shape[0]:
            raise ValueError(
                f"batch size mismatch: params has batch {params.shape[0]} but points has batch {points.shape[0]}"
            )
        dtype = grid_dtype(torch.promote_types(params.dtype, points.dtype))
        with no_autocast(params.device):
            return self._transform_points(params.to(dtype), points.to(dtype))

    def forward(self, params: Tensor, output_size: int | Sequence[int], align_corners: bool = False) -> Tensor:
        """Alias of :meth:`grid` so a transform can be called like a module."""
        return self.grid(params, output_size, align_corners)

    def check_params(self, params: Tensor) -> Tensor:
        """Validate ``params`` and return them flattened to shape (N, P).

        Raises:
            TypeError: not a floating-point tensor.
            ValueError: wrong rank or wrong parameter count.
        """
        check_tensor(params, "params")
        check_float(params, "params")
        shapes = self._accepted_shapes()
        if params.ndim >= 2 and tuple(params.shape[1:]) in shapes:
            return self._flatten_params(params)
        accepted = " or ".join("(N, " + ", ".join(str(s) for s in shape) + ")" for shape in shapes)
        raise ValueError(
            f"params for transform={self.name!r} must have shape {accepted} ({self.num_params} parameters per "
            f"sample); got {shape_str(params)}"
        )

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}"

    # -------------------------------------------------------------------------------------------- for subclasses
    def _accepted_shapes(self) -> list[tuple[int, ...]]:
        return [(self.num_params,)]

    def _flatten_params(self, params: Tensor) -> Tensor:
        return params.reshape(params.shape[0], self.num_params)  # (N, P)

    def _identity(self) -> Tensor:
        raise NotImplementedError

    def _grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        raise NotImplementedError

    def _reference_grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        return self._grid(params, size, align_corners)  # transforms without a separate fast path

    def _transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        raise NotImplementedError


class MatrixTransform(Transform):
    """A transform that is a homogeneous matrix: affine families, projective and 3-D affine.

    Adds closed-form parameter algebra: ``to_matrix``, ``from_matrix``, ``compose`` and ``inverse``, all on
    normalised output->source (``src_from_dst``) matrices.
    """

    def to_matrix(self, params: Tensor) -> Tensor:
        """Return the homogeneous ``src_from_dst`` matrices.

        Args:
            params: shape (N, P).

        Returns:
            Matrices of shape (N, 3, 3) for 2-D transforms or (N, 4, 4) for 3-D ones.
        """
        return self._to_matrix(self.check_params(params))

    def from_matrix(self, matrix: Tensor) -> Tensor:
        """Return the parameters of this family closest to homogeneous matrices.

        Args:
            matrix: shape (N, 3, 3) (2-D) or (N, 4, 4) (3-D), normalised ``src_from_dst``. Constrained families
                keep the orthogonal projection of the linear part onto their form (e.g. Attention keeps the mean
                of the diagonal as its scale); Projective divides by the bottom-right entry.

        Returns:
            Parameters of shape (N, P).
        """
        check_tensor(matrix, "matrix")
        check_float(matrix, "matrix")
        k = self.spatial_dims + 1
        if matrix.ndim != 3 or tuple(matrix.shape[1:]) != (k, k):
            raise ValueError(f"matrix for transform={self.name!r} must have shape (N, {k}, {k}); got "
                             f"{shape_str(matrix)}")
        return self._from_matrix(matrix)

    def compose(self, a_from_b: Tensor, b_from_c: Tensor) -> Tensor:
        """Return the parameters of ``a_from_c = a_from_b @ b_from_c`` (apply ``b_from_c`` first to points).

        For two transformers in series, ``a_from_b`` is the first one (input <- its output) and ``b_from_c`` the
        second (first output <- final output); the result samples the final output from the input in one pass.

        Args:
            a_from_b: parameters (N, P).
            b_from_c: parameters (N, P).

        Returns:
            Parameters (N, P) of the composition.
        """
        return self._from_matrix(self.to_matrix(a_from_b) @ self.to_matrix(b_from_c))

    def inverse(self, params: Tensor) -> Tensor:
        """Return the parameters of the inverse transform (source -> output), shape (N, P)."""
        return self._from_matrix(torch.linalg.inv(self.to_matrix(params)))

    def _transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        m = self._to_matrix(params)  # (N, d+1, d+1)
        d = self.spatial_dims
        return points @ m[:, :d, :d].transpose(1, 2) + m[:, None, :d, d]  # (N, M, d)

    def _to_matrix(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def _from_matrix(self, matrix: Tensor) -> Tensor:
        raise NotImplementedError
