"""Co-localisation data (Jaderberg et al. 2015, App. A.2): sets of 100 images of one digit class in 84x84 canvases.

T: a 28x28 MNIST digit at a uniformly random whole-pixel location of a black 84x84 image. TC: T plus 16 random 6x6
crops of training digits (clutter). Both are the ``"tc"`` distortion preset with ``canvas_size=84`` and
``clutter`` 0 or 16, so placement, clutter and the counter-based RNG are the ones of distorted MNIST; a digit is
copied exactly (nearest sampling of a whole-pixel shift), which makes its ground-truth box exact.

Ground truth: the digit's 28x28 frame in the canvas (``boxes``), the square a correct attention crop should match
(a "1" has a thin ink box that no square crop can reach IoU 0.5 with), and its ink box (``ink_boxes``). Boxes are
``(x_min, y_min, x_max, y_max)`` in canvas pixel-edge coordinates (pixel i spans [i, i + 1]); the frame may reach
past the canvas border, because placement keeps the digit's ink, not its empty margin, inside the canvas.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
from torch import Tensor

from stnkit.data import rng
from stnkit.data.distortions import DistortionConfig, distort, distortion_config

__all__ = ["COLOC_KINDS", "CANVAS_SIZE", "ColocSet", "coloc_config", "make_coloc_set", "random_crop_params",
           "select_class"]

CANVAS_SIZE = 84
#: Clutter crops per image of each variant: T (translated) and TC (translated + cluttered).
COLOC_KINDS = {"t": 0, "tc": 16}
_SELECT = 101  # RNG stream of the class subset (the distortion streams are 1-6)


class ColocSet(NamedTuple):
    """One co-localisation problem: N images of a single digit class.

    Attributes:
        images: float32 canvases (N, 1, S, S) in [0, 1].
        boxes: the digits' 28x28 frames (N, 4), float32, canvas pixel-edge coordinates.
        ink_boxes: the digits' ink boxes (N, 4), int64, same frame (clutter excluded).
        indices: MNIST indices of the digits (N,), int64.
        digit: the class.
    """

    images: Tensor
    boxes: Tensor
    ink_boxes: Tensor
    indices: Tensor
    digit: int


def coloc_config(kind: str = "t", canvas_size: int = CANVAS_SIZE) -> DistortionConfig:
    """Return the distortion of a co-localisation variant: ``"t"`` or ``"tc"`` (16 clutter crops).

    Example:
        >>> coloc_config("tc").clutter, coloc_config("t").canvas_size
        (16, 84)
    """
    if kind not in COLOC_KINDS:
        raise ValueError(f"unknown co-localisation kind {kind!r}; expected one of {', '.join(COLOC_KINDS)}")
    return distortion_config("tc", canvas_size=canvas_size, clutter=COLOC_KINDS[kind])


def select_class(labels: Tensor, digit: int, n: int, seed: int = 0) -> Tensor:
    """Pick ``n`` indices of class ``digit``: a seeded random subset, sorted.

    Each index's rank is a pure function of (seed, index), so the choice does not depend on the order or size of
    ``labels`` beyond which indices carry the class.

    Args:
        labels: class labels (M,).
        digit: the class.
        n: how many.
        seed: seed of the choice.

    Returns:
        int64 indices (n,) into ``labels``.

    Raises:
        ValueError: fewer than ``n`` images of the class.

    Example:
        >>> select_class(torch.tensor([0, 1, 1, 0, 1]), 1, 2).shape
        torch.Size([2])
    """
    candidates = torch.nonzero(labels == digit).flatten()  # (K,)
    if candidates.numel() < n:
        raise ValueError(f"only {candidates.numel()} images of class {digit}; {n} requested")
    u = rng.uniform(rng.derive_key(seed, "coloc-select", digit), candidates, 1, _SELECT)[:, 0]  # (K,)
    return candidates[u.argsort()[:n]].sort().values


def make_coloc_set(
    images: Tensor,
    labels: Tensor,
    digit: int,
    *,
    kind: str = "t",
    n: int = 100,
    seed: int = 0,
    clutter_pool: Tensor | None = None,
) -> ColocSet:
    """Build the co-localisation set of one class: ``n`` digits placed (and cluttered) in 84x84 canvases.

    Every image is a pure function of (seed, MNIST index): the same digit is placed identically in any set, and
    a TC set is its T set plus clutter.

    Args:
        images: uint8 MNIST digits (M, 28, 28) the set's digits come from (the paper's test split works well:
            the encoder never saw them).
        labels: their labels (M,).
        digit: the class.
        kind: ``"t"`` or ``"tc"``.
        n: images in the set (100 in the paper).
        seed: seed of the choice of digits, their placement and the clutter.
        clutter_pool: uint8 digits (K, 28, 28) clutter crops are cut from (the training digits); needed for TC.

    Returns:
        A :class:`ColocSet`.

    Example:
        >>> digits = torch.zeros(20, 28, 28, dtype=torch.uint8)
        >>> digits[:, 8:20, 10:18] = 255
        >>> s = make_coloc_set(digits, torch.arange(20) % 2, 1, n=5)
        >>> s.images.shape, s.boxes.shape
        (torch.Size([5, 1, 84, 84]), torch.Size([5, 4]))
    """
    config = coloc_config(kind)
    if config.clutter and clutter_pool is None:
        raise ValueError("kind='tc' needs clutter_pool, uint8 digits (K, 28, 28) to crop clutter from")
    idx = select_class(labels, digit, n, seed)  # (n,)
    digits = images[idx]  # (n, 28, 28)
    batch = distort(config, digits, idx, seed=seed, split="coloc",
                    clutter_pool=clutter_pool if clutter_pool is not None else digits, with_boxes=True)
    h, w = digits.shape[1:]
    centre = batch.params["translation"].double() + config.canvas_size / 2  # (n, 2) digit centre, edge coords
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    boxes = torch.cat([centre - half, centre + half], dim=1).float()  # (n, 4)
    return ColocSet(batch.images, boxes, cast(Tensor, batch.boxes), idx, int(digit))  # boxes: with_boxes=True


def random_crop_params(n: int, crop: int, canvas: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw attention parameters of random ``crop`` x ``crop`` windows lying inside a ``canvas`` x ``canvas`` image.

    The triplet loss's negative is "a random crop of the same image" (App. A.2): here a window of the digit's size
    at a uniformly random position.

    Args:
        n: number of windows.
        crop: window side, pixels.
        canvas: image side, pixels.
        generator: torch generator of the positions.

    Returns:
        Parameters (N, 3) ``(s, tx, ty)`` of the ``"attention"`` transform (output -> input, normalised).

    Example:
        >>> random_crop_params(4, 28, 84)[:, 0]
        tensor([0.3333, 0.3333, 0.3333, 0.3333])
    """
    s = crop / canvas
    t = (torch.rand(n, 2, generator=generator) * 2.0 - 1.0) * (1.0 - s)  # (N, 2): window inside the image
    return torch.cat([torch.full((n, 1), s), t], dim=1)  # (N, 3)
