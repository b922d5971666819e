"""Losses and metrics of the paper's co-localisation experiment (Jaderberg et al. 2015, App. A.2).

``triplet_hinge_loss`` is the hinge loss that pulls the transformer's crops of different images together and
pushes each away from a random crop of its own image; ``attended_box`` maps a transformer's output frame into the
input and ``box_iou`` scores it against the true box (a localisation is correct when IoU > 0.5).

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

__all__ = ["attended_box", "box_iou", "triplet_hinge_loss"]

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
