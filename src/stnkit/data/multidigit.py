"""A multi-digit MNIST proxy of SVHN's sequences: 1-5 MNIST digits in a row on a 64x64 canvas, trainable on a CPU.

Each sample is a pure function of (seed, split, epoch when ``fresh``, index) through the counter-based RNG of
:mod:`stnkit.data.rng`, one stream per quantity. Per sequence: length L uniform in 1-``max_length`` (default 5;
SVHN's are mostly 2-3 digits long; uniform gives the long ones enough weight), L digits drawn uniformly from the
pool, a digit scale (``scale``, of the 28x28 digit box), a spacing of the digit centres (``spacing``, in digit-box
widths), a rotation of the whole row (``rotation``, degrees) and a translation keeping the row's ink (a 20x20 core
of each box) inside the canvas (over ``shift`` of the free room; 0 centres the row); per digit a vertical jitter
(``jitter``, digit-box heights). A row too long for the canvas is shrunk until it fits. Clutter: ``clutter``
square crops of random pool digits at random places, combined by max, as the paper's cluttered MNIST. All digits
of a batch are placed with one :func:`stnkit.warp` call (about 6k samples/s at batch 256 on the shared 2-core
CPU, clutter included: far above what the models train on there).

Frames: geometry is drawn in centred canvas pixels (origin at the canvas centre, x right, y down); digit j is
placed by ``canvas = s R(angle) digit + c_j``; the warp receives the inverse map in normalised frames
(``align_corners=False``). Targets are ordered along the row (left to right), padded with 10 ("no digit").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from stnkit.data import rng
from stnkit.data.svhn import MAX_DIGITS, NO_DIGIT
from stnkit.sampling import warp

__all__ = ["MultiDigitBatch", "MultiDigitMNIST"]

_LENGTH, _PICK, _SCALE, _SPACING, _ANGLE, _SHIFT, _JITTER, _CLUTTER = range(301, 309)
_INK = 10.0  # half-side of the ink core of a 28x28 MNIST box (digits are normalised into 20x20)


class MultiDigitBatch(NamedTuple):
    """A generated batch.

    Attributes:
        images: float32 (B, 1, S, S) in [0, 1].
        length: int64 (B,), 1-5.
        digits: int64 (B, 5), the labels along the row, 10 past the end.
        boxes: float32 (B, 5, 4) ``(x_min, y_min, x_max, y_max)`` canvas pixel edges of each placed digit's ink
            core (the axis-aligned box of its rotated 20x20 core), zeros past the end.
    """

    images: Tensor
    length: Tensor
    digits: Tensor
    boxes: Tensor


class MultiDigitMNIST(Dataset):
    """Sequences of 1-5 MNIST digits on S x S canvases with SVHN-like variation (see the module docstring).

    Args:
        images: uint8 pool digits (N, 28, 28) (MNIST train digits for training, test digits for testing).
        labels: int64 (N,) labels of the pool.
        num_samples: length of the dataset.
        seed: RNG seed.
        split: split name mixed into the RNG key.
        fresh: new sequences every epoch (:meth:`set_epoch`); training only.
        canvas_size: S.
        scale: (low, high) of the digit scale.
        spacing: (low, high) of the distance of neighbouring digit centres, in digit-box widths.
        rotation: (low, high) of the row's angle, degrees.
        jitter: per-digit vertical offset, uniform in +-jitter digit-box heights.
        shift: the fraction of the free room (canvas minus the row's extent) over which the row's centre is moved,
            uniform in +-shift x room per axis; 1 fills the canvas, 0 centres every row (as SVHN's crops, centred
            on the digits' box).
        max_length: the longest sequence; lengths are uniform in 1..max_length (positions past it always "no
            digit").
        clutter: number of clutter crops per canvas.
        clutter_size: side of a clutter crop, pixels.

    Items are ``(image, length, digits)`` as :class:`~stnkit.data.svhn.SVHNSequences`' (one channel).

    Example:
        >>> pool = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8)
        >>> ds = MultiDigitMNIST(pool, torch.arange(20) % 10, num_samples=8)
        >>> x, n, d = ds[3]
        >>> x.shape, d.shape, bool(torch.equal(x, ds.generate([1, 3]).images[1]))
        (torch.Size([1, 64, 64]), torch.Size([5]), True)
    """

    def __init__(
        self, images: Tensor, labels: Tensor, num_samples: int, *, seed: int = 0, split: str = "train",
        fresh: bool = False, canvas_size: int = 64, scale: tuple[float, float] = (0.6, 1.0),
        spacing: tuple[float, float] = (0.65, 0.85), rotation: tuple[float, float] = (-15.0, 15.0),
        jitter: float = 0.1, clutter: int = 4, clutter_size: int = 8, shift: float = 1.0,
        max_length: int = MAX_DIGITS,
    ) -> None:
        if images.ndim != 3 or images.dtype != torch.uint8 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty uint8 tensor (N, H, W); got {tuple(images.shape)} "
                             f"{images.dtype}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}")
        if fresh and split != "train":
            raise ValueError(f"fresh sequences are for training only; split={split!r} must stay fixed")
        for name, (lo, hi) in (("scale", scale), ("spacing", spacing), ("rotation", rotation)):
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high; got {(lo, hi)}")
        if scale[0] <= 0 or spacing[0] <= 0 or jitter < 0 or clutter < 0 or num_samples < 0:
            raise ValueError("scale and spacing must be positive, jitter, clutter and num_samples >= 0")
        if not 0 <= shift <= 1:
            raise ValueError(f"shift must be in [0, 1] (a fraction of the free room); got {shift}")
        if not 1 <= max_length <= MAX_DIGITS:
            raise ValueError(f"max_length must be in [1, {MAX_DIGITS}]; got {max_length}")
        if not 1 <= clutter_size <= min(images.shape[1:]) or canvas_size < clutter_size:
            raise ValueError(f"clutter_size must be in [1, {min(images.shape[1:])}] and <= canvas_size; got "
                             f"{clutter_size}")
        self.images, self.labels = images, labels.to(torch.int64)
        self.num_samples, self.seed, self.split, self.fresh, self.epoch = int(num_samples), int(seed), split, fresh, 0
        self.canvas_size = int(canvas_size)
        self.scale, self.spacing, self.rotation = tuple(map(float, scale)), tuple(map(float, spacing)), \
            tuple(map(float, rotation))
        self.jitter, self.clutter, self.clutter_size = float(jitter), int(clutter), int(clutter_size)
        self.shift, self.max_length = float(shift), int(max_length)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sequences are generated (only matters when ``fresh``)."""
        self.epoch = int(epoch)

    def key(self, epoch: int | None = None) -> int:
        """Return the RNG key of an epoch (default the current one); fixed sets ignore the epoch."""
        epoch = self.epoch if epoch is None else epoch
        return rng.derive_key(self.seed, self.split, epoch if self.fresh else 0)

    def _draw(self, key: int, ids: Tensor, stream: int, num: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * rng.uniform(key, ids, num, stream, torch.float64)  # (B, num)

    def generate(self, indices: Sequence[int] | Tensor, epoch: int | None = None) -> MultiDigitBatch:
        """Generate the samples at ``indices`` (length B) with their digit boxes; see :class:`MultiDigitBatch`."""
        ids = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise IndexError(f"indices must be in [0, {self.num_samples}); got {ids.tolist()}")
        key, b, k, half = self.key(epoch), ids.shape[0], MAX_DIGITS, self.canvas_size / 2
        h, w = self.images.shape[1:]
        m = self.max_length
        length = 1 + (rng.uniform(key, ids, 1, _LENGTH, torch.float64)[:, 0] * m).long().clamp_max(m - 1)  # (B,)
        pick = (rng.uniform(key, ids, k, _PICK, torch.float64) * len(self.images)).long()  # (B, 5)
        pick = pick.clamp_max(len(self.images) - 1)
        present = torch.arange(k) < length[:, None]  # (B, 5)
        digits = torch.where(present, self.labels[pick], torch.full_like(pick, NO_DIGIT))  # (B, 5)
        scale = self._draw(key, ids, _SCALE, 1, *self.scale)[:, 0]  # (B,)
        step = self._draw(key, ids, _SPACING, 1, *self.spacing)[:, 0] * w  # (B,) centre distance at scale 1
        angle = torch.deg2rad(self._draw(key, ids, _ANGLE, 1, *self.rotation)[:, 0])  # (B,)
        jitter = self._draw(key, ids, _JITTER, k, -self.jitter, self.jitter) * h  # (B, 5) at scale 1
        cos, sin = angle.cos().abs(), angle.sin().abs()
        hx = step * (length - 1) / 2 + _INK  # (B,) half-extents of the unrotated row at scale 1
        hy = _INK + self.jitter * h
        ext_x, ext_y = cos * hx + sin * hy, sin * hx + cos * hy  # (B,) of the rotated row
        scale = torch.minimum(scale, (half - 1) / torch.maximum(ext_x, ext_y))  # shrink rows that do not fit
        room = self.shift * (half - torch.stack([ext_x, ext_y], 1) * scale[:, None]).clamp_min(0)  # (B, 2)
        shift = (2 * rng.uniform(key, ids, 2, _SHIFT, torch.float64) - 1) * room  # (B, 2) row centre, px
        along = (torch.arange(k, dtype=torch.float64) - (length[:, None] - 1) / 2) * step[:, None]  # (B, 5)
        rot = torch.stack([angle.cos(), -angle.sin(), angle.sin(), angle.cos()], -1).view(b, 1, 2, 2)  # (B, 1, 2, 2)
        offsets = torch.stack([along, jitter], -1).unsqueeze(-1)  # (B, 5, 2, 1) digit centres in the row, scale 1
        centres = scale[:, None, None] * (rot @ offsets).squeeze(-1) + shift[:, None]  # (B, 5, 2) canvas px
        lin_inv = rot.transpose(-1, -2) / scale[:, None, None, None]  # (B, 1, 2, 2): inv(s R)
        to_digit = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)[:, None]  # (2, 1) centred px -> norm
        a = (to_digit * lin_inv * half).expand(b, k, 2, 2)  # (B, 5, 2, 2) canvas norm -> digit norm
        t = -(to_digit * lin_inv) @ centres.unsqueeze(-1)  # (B, 5, 2, 1)
        theta = torch.cat([a, t], -1).reshape(b * k, 2, 3).float()  # (B*5, 2, 3)
        src = self.images[pick].reshape(b * k, 1, h, w).float() / 255.0  # (B*5, 1, H, W)
        placed = warp(src, theta, "affine", (self.canvas_size, self.canvas_size)).view(b, k, *(self.canvas_size,) * 2)
        canvas = (placed * present[:, :, None, None]).amax(dim=1, keepdim=True).clamp_(0, 1)  # (B, 1, S, S)
        if self.clutter:
            canvas = torch.maximum(canvas, self._clutter(key, ids))
        core = scale[:, None] * _INK * (cos + sin)[:, None]  # (B, 1) half-side of a rotated core's box
        c_px = centres + half  # (B, 5, 2) pixel-edge coordinates
        boxes = torch.cat([c_px - core[..., None], c_px + core[..., None]], -1) * present[..., None]  # (B, 5, 4)
        return MultiDigitBatch(canvas, length, digits, boxes.float())

    def _clutter(self, key: int, ids: Tensor) -> Tensor:
        """Canvases (B, 1, S, S) holding ``clutter`` crops of random pool digits at random places (max-combined)."""
        b, c, size, s = ids.shape[0], self.clutter, self.clutter_size, self.canvas_size
        n, h, w = self.images.shape
        u = rng.uniform(key, ids, 5 * c, _CLUTTER, torch.float64).view(b, c, 5)  # (B, C, 5)
        limits = torch.tensor([n, w - size + 1, h - size + 1, s - size + 1, s - size + 1], dtype=torch.float64)
        draws = torch.minimum((u * limits).long(), limits.long() - 1)  # (B, C, 5) integers in [0, limit)
        ar = torch.arange(size)
        rows = (draws[..., 2:3] + ar)[..., :, None]  # (B, C, k, 1)
        cols = (draws[..., 1:2] + ar)[..., None, :]  # (B, C, 1, k)
        patches = self.images[draws[..., 0, None, None], rows, cols].float() / 255.0  # (B, C, k, k)
        flat = (draws[..., 4:5] + ar)[..., :, None] * s + (draws[..., 3:4] + ar)[..., None, :]  # (B, C, k, k)
        layer = torch.zeros(b, s * s)
        layer.scatter_reduce_(1, flat.reshape(b, -1), patches.reshape(b, -1), "amax")  # (B, S*S)
        return layer.view(b, 1, s, s)

    def get_batch(self, indices: Sequence[int] | Tensor, epoch: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(images (B, 1, S, S), length (B,), digits (B, 5))`` for ``indices``."""
        batch = self.generate(indices, epoch)
        return batch.images, batch.length, batch.digits

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        images, length, digits = self.get_batch([index])
        return images[0], length[0], digits[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Batched fetch used by ``DataLoader`` (one warp per batch)."""
        return list(zip(*(t.unbind(0) for t in self.get_batch(indices))))

    def __repr__(self) -> str:
        return (f"MultiDigitMNIST(n={len(self)}, pool={len(self.images)}, size={self.canvas_size}, seed={self.seed}, "
                f"split={self.split!r}, fresh={self.fresh})")
