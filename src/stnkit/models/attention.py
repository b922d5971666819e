"""Attention for efficiency: a spatial transformer reads a small crop of a large input for a small classifier.

The paper's point (iii) (Jaderberg et al. 2015, Sec. 3.4 and 4): an attention transformer (scale + translation)
whose output is smaller than its input lets the classifier run at the crop's resolution, so the network is cheaper
than one on the full input. The classifier is the Table 1 CNN on the crop. Two localisation designs, both on a
~30x30 version of the input (an average pool first: the localisation never costs full resolution):

- ``"heatmap"`` (the default for the ``"attention"`` transform): a fully-convolutional score map whose
  soft-argmax is the window's centre, one learned scale (:func:`~stnkit.models.localization.heatmap_localization`,
  :class:`~stnkit.models.localization.SoftArgmaxWindowHead`).
- ``"cnn"`` (the default for other transforms): the ST-CNN localisation net (conv, pool, conv, FC) regressing the
  transform's parameters from fully-connected features, as in the paper's distorted-MNIST models. On TC digits in
  a 120x120 canvas it failed: its units died within 500-1,000 steps, leaving one fixed crop for every image
  (``results/attention/fc-localisation``), and a window made to zoom in from the whole image did not train either.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from stnkit import transforms as _transforms
from stnkit._checks import normalize_size
from stnkit.models._registry import register_model
from stnkit.models.localization import (
    SoftArgmaxWindowHead,
    cnn_localization,
    heatmap_localization,
)
from stnkit.models.mnist import CNN, DEFAULT_PARAM_BUDGET, STClassifier, cnn_channels, st_sizes
from stnkit.modules import SpatialTransformer

__all__ = ["LOCALIZATIONS", "LOC_SIZE", "SCALE_RANGE"]

LOC_SIZE = 60  # the localisation net's input is pooled to about this size (then halved inside the ST-CNN net)
LOCALIZATIONS = ("auto", "heatmap", "cnn")
#: The heatmap window's scale range, as fractions of the crop's own share of the input (crop / input side): from
#: a crop at the input's resolution to 2.5x that (a 28x28 digit needs 0.23 of a 120x120 input).
SCALE_RANGE = (1.0, 2.5)


def _loc_pool(size: tuple[int, int]) -> int:
    return max(1, min(size) // LOC_SIZE)


@register_model("st-cnn-attention")
def st_cnn_attention(
    input_size: int | Sequence[int] = 120, in_channels: int = 1, num_classes: int = 10, crop: int = 30,
    transform: str = "attention", st_downsample: str | None = None, param_budget: int = DEFAULT_PARAM_BUDGET,
    loc_lr_scale: float = 1.0, bound: float | None = None, channels: Sequence[int] | None = None,
    localization: str = "auto", scale_range: tuple[float, float] | None = None, init_scale: float | None = None,
) -> STClassifier:
    """Attention ST-CNN: a ``crop`` x ``crop`` window of the input, chosen by a low-resolution localisation net.

    Args:
        input_size: (H, W) of the (large) input.
        in_channels: C.
        num_classes: logits.
        crop: side of the transformer's output, the classifier's input.
        transform: ``"attention"`` (the paper's crop: scale + translation) or any other 2-D transform (``"cnn"``
            localisation only).
        st_downsample: None, ``"output_size"`` or ``"avgpool"``: halve the crop before the classifier.
        param_budget: parameters the classifier's conv widths are solved for (unless ``channels``).
        loc_lr_scale: learning-rate multiplier of the localisation net.
        bound: optional bound of the parameters around the identity (``"cnn"`` localisation only).
        channels: the classifier's two conv widths, e.g. the full-resolution CNN's, for a like-for-like comparison.
        localization: ``"heatmap"`` (score map + soft-argmax: the window's centre; one learned scale; attention
            transform only), ``"cnn"`` (the ST-CNN net regressing the transform, identity-initialised: the whole
            input at first) or ``"auto"``: ``"heatmap"`` for the attention transform, else ``"cnn"``.
        scale_range: (lo, hi) of the heatmap window's scale (its side over the input's); default
            :data:`SCALE_RANGE` times ``crop / input side``, capped at 1.
        init_scale: the heatmap window's initial scale; default the middle of ``scale_range``.

    Example:
        >>> import torch
        >>> model = st_cnn_attention(input_size=120, crop=30, channels=(8, 16))
        >>> model(torch.rand(2, 1, 120, 120)).shape, model.transformer.output_size
        (torch.Size([2, 10]), (30, 30))
    """
    h, w = normalize_size(input_size, 2, "input_size")
    size = (h, w)
    t = _transforms.get(transform)
    if t.spatial_dims != 2:
        raise ValueError(f"transform {t.name!r} is not a 2-D transform; ST models classify images")
    if localization not in LOCALIZATIONS:
        raise ValueError(f"unknown localization {localization!r}; expected one of {', '.join(LOCALIZATIONS)}")
    ch, cw = normalize_size(crop, 2, "crop")
    out_size, cls_size = st_sizes((ch, cw), st_downsample)
    if localization == "auto":
        localization = "heatmap" if t.name == "attention" else "cnn"
    if localization == "heatmap":
        if t.name != "attention":
            raise ValueError(f"the heatmap localisation places an attention window (transform 'attention'); got "
                             f"transform {t.name!r}: use localization='cnn' for other transforms")
        if bound is not None:
            raise ValueError("bound applies to the 'cnn' localisation's regression; the heatmap window is bounded "
                             "by its scale_range and the map")
        share = max(ch / h, cw / w)
        lo, hi = scale_range or (min(SCALE_RANGE[0] * share, 0.99), min(SCALE_RANGE[1] * share, 1.0))
        loc, map_size, stride = heatmap_localization(size, in_channels)
        head = SoftArgmaxWindowHead(map_size, stride, size, (lo, hi), (lo + hi) / 2 if init_scale is None
                                    else init_scale)
        st = SpatialTransformer(loc, t, output_size=out_size, loc_lr_scale=loc_lr_scale, head=head)
    else:
        pool = _loc_pool(size)
        pooled = (size[0] // pool, size[1] // pool)
        loc, feat = cnn_localization(pooled, in_channels)
        if pool > 1:
            loc = nn.Sequential(nn.AvgPool2d(pool), loc)  # (N, C, H/pool, W/pool) first: the net never sees full res
        st = SpatialTransformer(loc, t, output_size=out_size, in_features=feat, bound=bound,
                                loc_lr_scale=loc_lr_scale)
    budget = param_budget - sum(p.numel() for p in st.localization_parameters())  # localisation net and head
    channels = channels or cnn_channels((in_channels, *cls_size), num_classes, budget)
    return STClassifier(st, CNN(cls_size, in_channels, num_classes, channels), avgpool=st_downsample == "avgpool")
