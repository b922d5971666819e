"""Losses and metrics of the paper's co-localisation (App. A.2) and multi-digit SVHN (Sec. 4.2) experiments.

``triplet_hinge_loss`` is the hinge loss that pulls the transformer's crops of different images together and
pushes each away from a random crop of its own image; ``attended_box`` maps a transformer's output frame into the
input and ``box_iou`` scores it against the true box (a localisation is correct when IoU > 0.5).
``sequence_loss``, ``decode_sequence``, ``sequence_accuracy`` and ``digit_accuracy`` score a length head (N, K + 1)
and K digit heads (N, K, D) whose last class is "no digit" (:mod:`stnkit.models.svhn`); uniform logits cost
``log(K + 1) + K log(D)``.

Boxes are ``(x_min, y_min, x_max, y_max)`` in *pixel-edge* coordinates of the input: pixel ``i`` spans
``[i, i + 1]``, so an integer box ``(x0, y0, x1, y1)`` covers ``image[y0:y1, x0:x1]`` (the convention of
:func:`stnkit.data.ink_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit import transforms as _transforms
from stnkit._checks import check_float, check_tensor, shape_str
from stnkit.grid import denormalize_points
from stnkit.transforms.base import Transform

__all__ = ["attended_box", "box_iou", "decode_sequence", "digit_accuracy", "sequence_accuracy", "sequence_loss",
           "triplet_hinge_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_pairs(x: Tensor, name: str, last: int | None = None) -> None:
    check_tensor(x, name)
    check_float(x, name)
    if x.ndim != 2 or (last is not None and x.shape[1] != last):
        raise ValueError(f"{name} must have shape (N, {last if last is not None else 'D'}); got {shape_str(x)}")


def triplet_hinge_loss(
    embeddings: Tensor, random_embeddings: Tensor, margin: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Return the co-localisation triplet loss ``sum_n sum_{m != n} max(0, |e_n - e_m|^2 - |e_n - r_n|^2 + margin)``.

    ``e_n`` is the embedding of the transformer's crop of image n and ``r_n`` that of a random crop of the same
    image (App. A.2, margin alpha = 1): crops of the common object should be closer to each other than to
    background crops.

    Args:
        embeddings: e, shape (N, D), the crops' embeddings.
        random_embeddings: r, shape (N, D), the random crops' embeddings (row n from image n).
        margin: alpha of the hinge.
        reduction: ``"mean"`` over the N (N - 1) ordered pairs, ``"sum"`` (the paper's sum) or ``"none"``
            (the (N, N) matrix of hinge terms, zero on the diagonal).

    Returns:
        A scalar, or the (N, N) terms for ``reduction="none"``.

    Raises:
        ValueError: mismatched shapes or an unknown reduction.

    Example:
        >>> e = torch.zeros(3, 4)
        >>> triplet_hinge_loss(e, e + 1.0)  # all crops identical, random crops 4 away: 0 - 4 + 1 < 0
        tensor(0.)
    """
    _check_pairs(embeddings, "embeddings")
    _check_pairs(random_embeddings, "random_embeddings", embeddings.shape[1])
    if random_embeddings.shape[0] != embeddings.shape[0]:
        raise ValueError(f"random_embeddings must have shape {shape_str(embeddings)}; got "
                         f"{shape_str(random_embeddings)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {', '.join(_REDUCTIONS)}")
    n = embeddings.shape[0]
    pos = torch.cdist(embeddings, embeddings).square()  # (N, N): |e_n - e_m|^2
    neg = (embeddings - random_embeddings).square().sum(dim=1)  # (N,): |e_n - r_n|^2
    terms = torch.relu(pos - neg[:, None] + margin)  # (N, N), row n = anchor n
    terms = terms * (1.0 - torch.eye(n, dtype=terms.dtype, device=terms.device))  # m != n
    if reduction == "none":
        return terms
    total = terms.sum()
    return total if reduction == "sum" else total / max(n * (n - 1), 1)


def attended_box(
    transform: str | Transform, params: Tensor, input_size: Sequence[int], align_corners: bool = False
) -> Tensor:
    """Return the axis-aligned input box the transformer's output frame is sampled from.

    The output frame's four corners (normalised (+-1, +-1)) are mapped to the input with ``transform_points`` and
    their bounding box is taken; for the attention transform (scale + translation) that is the crop itself.

    Args:
        transform: the transformer's transform (name or instance); a 2-D matrix transform.
        params: parameters (N, P), output -> source, normalised.
        input_size: (H, W) of the input.
        align_corners: the transformer's frame convention.

    Returns:
        Boxes (N, 4) ``(x_min, y_min, x_max, y_max)`` in input pixel-edge coordinates (see the module docstring).

    Example:
        >>> attended_box("attention", torch.tensor([[1 / 3, 0.0, 0.0]]), (84, 84))
        tensor([[28., 28., 56., 56.]])
    """
    t = _transforms.get(transform)
    if t.spatial_dims != 2:
        raise ValueError(f"attended_box needs a 2-D transform; got {t.name!r}")
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64,
                           device=params.device)  # (4, 2); float64 so integer boxes come out exact
    src = t.transform_points(params, corners)  # (N, 4, 2) normalised input points, float64
    src_px = denormalize_points(src, tuple(input_size), align_corners) + 0.5  # pixel-edge coordinates
    box = torch.cat([src_px.amin(dim=1), src_px.amax(dim=1)], dim=1)  # (N, 4)
    return box.to(params.dtype)


def box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Return the intersection over union of paired boxes.

    Args:
        boxes_a: (N, 4) ``(x_min, y_min, x_max, y_max)``, any one frame.
        boxes_b: (N, 4) in the same frame.

    Returns:
        IoU per pair, shape (N,), in [0, 1] (0 when both boxes are empty).

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]]))
        tensor([0.3333])
    """
    _check_pairs(boxes_a, "boxes_a", 4)
    _check_pairs(boxes_b, "boxes_b", 4)
    if boxes_a.shape != boxes_b.shape:
        raise ValueError(f"boxes_b must have shape {shape_str(boxes_a)}; got {shape_str(boxes_b)}")
    lo = torch.maximum(boxes_a[:, :2], boxes_b[:, :2])  # (N, 2)
    hi = torch.minimum(boxes_a[:, 2:], boxes_b[:, 2:])  # (N, 2)
    inter = (hi - lo).clamp_min(0).prod(dim=1)  # (N,)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clamp_min(0).prod(dim=1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clamp_min(0).prod(dim=1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def _check_sequences(length_logits: Tensor, digit_logits: Tensor, length: Tensor, digits: Tensor) -> None:
    for x, name in ((length_logits, "length_logits"), (digit_logits, "digit_logits")):
        check_tensor(x, name)
        check_float(x, name)
    if digit_logits.ndim != 3:
        raise ValueError(f"digit_logits must have shape (N, K, D) (positions, digit classes); got "
                         f"{shape_str(digit_logits)}")
    n, k, _ = digit_logits.shape
    if length_logits.shape != (n, k + 1):
        raise ValueError(f"length_logits must have shape ({n}, {k + 1}) (lengths 0-{k}); got "
                         f"{shape_str(length_logits)}")
    if length.shape != (n,) or digits.shape != (n, k):
        raise ValueError(f"targets must be length ({n},) and digits ({n}, {k}); got {shape_str(length)} and "
                         f"{shape_str(digits)}")


def sequence_loss(length_logits: Tensor, digit_logits: Tensor, length: Tensor, digits: Tensor,
                  reduction: str = "mean") -> Tensor:
    """Return the multi-digit sequence loss: cross-entropy of the length plus that of every position's digit.

    ``-log P(L) - sum_i log P(S_i)`` (Goodfellow et al. 2014's negative log-likelihood); every one of the K
    positions is a term, those past the sequence's end with the target "no digit" (the last class, Jaderberg et
    al. 2015's five 11-way heads), so no head is left untrained.

    Args:
        length_logits: (N, K + 1) logits of the length 0-K.
        digit_logits: (N, K, D) logits per position (class D - 1: no digit).
        length: (N,) int64 true lengths.
        digits: (N, K) int64 true digits, D - 1 past the end.
        reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"`` ((N,) per-sequence losses).

    Returns:
        A scalar, or (N,) for ``reduction="none"``.

    Raises:
        ValueError: inconsistent shapes or an unknown reduction.

    Example:
        >>> target = torch.tensor([[1, 2, 10, 10, 10]])
        >>> sequence_loss(torch.zeros(1, 6), torch.zeros(1, 5, 11), torch.tensor([2]), target)  # log 6 + 5 log 11
        tensor(13.7812)
    """
    _check_sequences(length_logits, digit_logits, length, digits)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {', '.join(_REDUCTIONS)}")
    ce_length = torch.nn.functional.cross_entropy(length_logits, length, reduction="none")  # (N,)
    ce_digits = torch.nn.functional.cross_entropy(digit_logits.transpose(1, 2), digits, reduction="none")  # (N, K)
    per_sequence = ce_length + ce_digits.sum(dim=1)  # (N,)
    if reduction == "none":
        return per_sequence
    return per_sequence.sum() if reduction == "sum" else per_sequence.mean()


def decode_sequence(length_logits: Tensor, digit_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Return the most probable sequence under the heads' factorisation ``P(L) prod_i P(S_i)``.

    For each length L in 0-K the score is ``log P(L) + sum_{i < L} max_{d < D-1} log P(S_i = d) + sum_{i >= L}
    log P(S_i = none)``; the best L wins (ties: the shorter), its digits are the per-position best digits.

    Args:
        length_logits: (N, K + 1).
        digit_logits: (N, K, D), class D - 1 = no digit.

    Returns:
        ``(length (N,), digits (N, K))`` int64, digits D - 1 past the end.

    Example:
        >>> d = torch.full((1, 5, 11), -9.0)
        >>> d[0, 0, 4] = d[0, 1, 2] = d[0, 2:, 10] = 0.0
        >>> decode_sequence(torch.zeros(1, 6), d)
        (tensor([2]), tensor([[ 4,  2, 10, 10, 10]]))
    """
    n, k, d = digit_logits.shape
    log_len = torch.log_softmax(length_logits, dim=1)  # (N, K + 1)
    log_dig = torch.log_softmax(digit_logits, dim=2)  # (N, K, D)
    best, best_digit = log_dig[..., :-1].max(dim=2)  # (N, K): best real digit per position
    none = log_dig[..., -1]  # (N, K)
    zeros = log_len.new_zeros(n, 1)
    digit_part = torch.cat([zeros, best.cumsum(dim=1)], dim=1)  # (N, K + 1): sum_{i < L} best
    none_part = torch.cat([none.flip(1).cumsum(dim=1).flip(1), zeros], dim=1)  # (N, K + 1): sum_{i >= L} none
    length = (log_len + digit_part + none_part).argmax(dim=1)  # (N,)
    positions = torch.arange(k, device=digit_logits.device)
    out = torch.where(positions < length[:, None], best_digit, torch.full_like(best_digit, d - 1))  # (N, K)
    return length, out


def sequence_accuracy(length_logits: Tensor, digit_logits: Tensor, length: Tensor, digits: Tensor) -> Tensor:
    """Return the fraction of sequences decoded (:func:`decode_sequence`) entirely right: length and every digit.

    Args:
        length_logits: (N, K + 1).
        digit_logits: (N, K, D).
        length: (N,) true lengths.
        digits: (N, K) true digits, D - 1 past the end.

    Returns:
        A float scalar in [0, 1] (1 - the paper's sequence error).

    Example:
        >>> d = torch.full((2, 5, 11), -9.0)
        >>> d[:, 0, 4] = d[:, 1:, 10] = 0.0
        >>> truth = torch.tensor([[4] + [10] * 4, [3] + [10] * 4])
        >>> sequence_accuracy(torch.zeros(2, 6), d, torch.tensor([1, 1]), truth)
        tensor(0.5000)
    """
    _check_sequences(length_logits, digit_logits, length, digits)
    pred_length, pred = decode_sequence(length_logits, digit_logits)
    right = (pred_length == length) & (pred == digits).all(dim=1)  # (N,)
    return right.float().mean()


def digit_accuracy(length_logits: Tensor, digit_logits: Tensor, length: Tensor, digits: Tensor) -> Tensor:
    """Return the fraction of true digits that the decoded sequence has right at their position.

    Counts the positions ``i < length`` of every sequence (N * mean length digits); a missing or wrong digit there
    is an error, extra predicted digits past the true end are not counted (they make the sequence wrong).

    Args:
        length_logits: (N, K + 1).
        digit_logits: (N, K, D).
        length: (N,) true lengths.
        digits: (N, K) true digits.

    Returns:
        A float scalar in [0, 1] (0 when there are no true digits).

    Example:
        >>> d = torch.full((1, 5, 11), -9.0)
        >>> d[0, 0, 4] = d[0, 1, 7] = d[0, 2:, 10] = 0.0
        >>> digit_accuracy(torch.zeros(1, 6), d, torch.tensor([2]), torch.tensor([[4, 2, 10, 10, 10]]))
        tensor(0.5000)
    """
    _check_sequences(length_logits, digit_logits, length, digits)
    _, pred = decode_sequence(length_logits, digit_logits)
    real = torch.arange(digits.shape[1], device=digits.device) < length[:, None]  # (N, K)
    right = ((pred == digits) & real).sum()
    return right.float() / real.sum().clamp_min(1)
