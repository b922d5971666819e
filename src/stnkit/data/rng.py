"""Counter-based random numbers: every draw is a pure function of (key, sample id, stream, counter).

A stateful generator ties a sample's randomness to the order samples are drawn in; a counter-based one
(splitmix64's finaliser, Steele, Lea & Flood 2014, applied to a counter) does not: any sample can be regenerated
alone and equals its row inside any batch, in any order, in any worker process. All tensor arithmetic is int64
(wrapping multiplication; logical right shifts emulated with a mask), so it is vectorised and device-agnostic.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

__all__ = ["derive_key", "mix64", "normal", "uniform"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / phi, splitmix64's increment
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def _signed(x: int) -> int:
    """Reinterpret an unsigned 64-bit Python int as the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def mix64(x: int) -> int:
    """Return splitmix64's finaliser of a Python int (the reference the tensor version is tested against).

    Args:
        x: any int; only its low 64 bits are used.

    Returns:
        An int in [0, 2^64).

    Example:
        >>> hex(mix64(0))
        '0x0'
        >>> mix64(1) != mix64(2)
        True
    """
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _C1) & _MASK64
    x = ((x ^ (x >> 27)) * _C2) & _MASK64
    return x ^ (x >> 31)


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic, i.e. sign-extending)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64(x: Tensor) -> Tensor:
    """Tensor version of :func:`mix64` on int64 bit patterns (multiplication wraps modulo 2^64)."""
    x = (x ^ _srl(x, 30)) * _signed(_C1)
    x = (x ^ _srl(x, 27)) * _signed(_C2)
    return x ^ _srl(x, 31)


def derive_key(seed: int, *words: int | str) -> int:
    """Fold a seed and further words (ints or strings) into one 64-bit key.

    Strings are hashed with BLAKE2b (stable across processes, unlike Python's ``hash``).

    Args:
        seed: base seed (any int).
        *words: e.g. the split name and the epoch.

    Returns:
        An int in [0, 2^64).

    Example:
        >>> derive_key(0, "train", 0) != derive_key(0, "test", 0)
        True
    """
    key = mix64(seed + _GOLDEN)
    for w in words:
        if isinstance(w, str):
            w = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        key = mix64(key ^ mix64(int(w) + _GOLDEN))
    return key


def _bits(key: int, ids: Tensor, stream: int, num: int) -> Tensor:
    """Return 64 random bits per (id, counter), shape (N, num) int64."""
    stream_key = _signed(derive_key(key, stream))
    ids = ids.to(torch.int64).reshape(-1, 1)  # (N, 1)
    sample = _mix64(ids * _signed(_GOLDEN) + stream_key)  # (N, 1): one state per sample
    counter = torch.arange(1, num + 1, device=ids.device, dtype=torch.int64) * _signed(_GOLDEN)  # (num,)
    return _mix64(sample + counter)  # (N, num)


def uniform(key: int, ids: Tensor, num: int, stream: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw uniforms in [0, 1) that depend only on (key, id, stream, column).

    Args:
        key: 64-bit key from :func:`derive_key` (seed, split, epoch ...).
        ids: sample ids, shape (N,), any integer dtype.
        num: draws per sample.
        stream: independent stream number, so each quantity (angle, scale, ...) has its own draws and adding a
            quantity never shifts another one.
        dtype: float dtype of the result; the draw itself has 53 bits.

    Returns:
        Tensor of shape (N, num) in [0, 1).

    Example:
        >>> u = uniform(derive_key(0), torch.arange(4), 3)
        >>> u.shape, bool(torch.equal(u[2:3], uniform(derive_key(0), torch.tensor([2]), 3)))
        (torch.Size([4, 3]), True)
    """
    top53 = _srl(_bits(key, ids, stream, num), 11)  # (N, num) in [0, 2^53)
    return (top53.to(torch.float64) * 2.0**-53).to(dtype)


def normal(key: int, ids: Tensor, num: int, stream: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw standard normals (Box-Muller on two uniforms each) that depend only on (key, id, stream, column).

    Args:
        key: 64-bit key from :func:`derive_key`.
        ids: sample ids, shape (N,).
        num: draws per sample.
        stream: independent stream number.
        dtype: float dtype of the result.

    Returns:
        Tensor of shape (N, num), mean 0, standard deviation 1.

    Example:
        >>> normal(derive_key(0), torch.arange(5), 2).shape
        torch.Size([5, 2])
    """
    u = uniform(key, ids, 2 * num, stream, torch.float64).view(-1, num, 2)  # (N, num, 2)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))  # 1 - u in (0, 1]: finite
    return (radius * torch.cos(2.0 * math.pi * u[..., 1])).to(dtype)  # (N, num)
