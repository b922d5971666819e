"""Shape-only input validation used once at the public boundary.

Every check looks at shapes, dtypes and devices only (never at values), so it never synchronises a device.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def shape_str(x: Tensor) -> str:
    """Format a tensor's shape as ``(2, 3, 4)``."""
    return "(" + ", ".join(str(int(s)) for s in x.shape) + ")"


def check_tensor(x: object, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    return x


def check_float(x: Tensor, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating-point dtype."""
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or float64); got {x.dtype}"
        )


def check_ndim(x: Tensor, ndims: Sequence[int], name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``ndims``; ``layout`` describes the expected shape."""
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have shape {layout}; got {shape_str(x)}")


def check_same_device(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when two tensors live on different devices."""
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device; got {a.device} and {b.device}")


def check_batch(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when the leading (batch) sizes of two tensors differ."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"batch size mismatch: {name_a} has batch {a.shape[0]} {shape_str(a)} but {name_b} has batch "
            f"{b.shape[0]} {shape_str(b)}"
        )


def check_choice(value: str, choices: Sequence[str], name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(repr(c) for c in choices)}")


#: Most points a size may hold (``prod(size)``): the int32 index limit of grid kernels. A grid of that many points
#: is 16 GiB in float32 per sample already, so a larger ``output_size`` is a typo, refused before allocating.
MAX_SIZE_NUMEL = 2**31 - 1


def normalize_size(size: int | Sequence[int], ndim: int, name: str = "output_size") -> tuple[int, ...]:
    """Turn ``size`` into a tuple of ``ndim`` positive ints (an int is repeated), at most ``MAX_SIZE_NUMEL`` points.

    Args:
        size: an int (square/cube) or a sequence of ``ndim`` ints (``torch.Size``, numpy or symbolic ints too).
        ndim: the number of spatial dimensions, 2 or 3.
        name: the argument's name in error messages.

    Returns:
        The size as a tuple of ``ndim`` Python ints.

    Raises:
        ValueError: wrong length, a non-positive entry, or more than ``MAX_SIZE_NUMEL`` points in all.
        TypeError: entries that are not integers.

    Example:
        >>> normalize_size(4, 2), normalize_size((2, 3, 4), 3)
        ((4, 4), (2, 3, 4))
    """
    if isinstance(size, torch.Size):
        size = tuple(size)
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,) * ndim
    if not isinstance(size, Sequence) or isinstance(size, str):
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints; got {size!r}")
    dims = "(H_out, W_out)" if ndim == 2 else "(D_out, H_out, W_out)"
    if len(size) != ndim:
        raise ValueError(f"{name} must have {ndim} entries {dims}; got {tuple(size)!r} ({len(size)} entries)")
    out = []
    for s in size:
        try:
            if isinstance(s, (bool, np.bool_)):
                raise TypeError
            s = operator.index(s)  # ints, numpy ints and torch.SymInt; floats and bools-as-sizes are refused
        except TypeError:
            raise TypeError(f"{name} entries must be integers; got {tuple(size)!r}") from None
        if s <= 0:
            raise ValueError(f"{name} entries must be positive; got {tuple(size)!r}")
        out.append(s)
    numel = 1
    for s in out:
        numel *= s
    if isinstance(numel, int) and numel > MAX_SIZE_NUMEL:  # symbolic sizes (torch.export) are not bounded here
        raise ValueError(f"{name} {tuple(out)!r} has {numel:,} points, more than the limit of {MAX_SIZE_NUMEL:,} "
                         f"(2**31 - 1) per sample; it would need {8 * numel / 2**30:.0f} GiB for its float32 grid")
    return tuple(out)
