"""The distorted-MNIST networks of Table 1 (Jaderberg et al. 2015, Sec. 4.1, App. A.4): FCN, CNN, ST-FCN, ST-CNN.

Every classifier has three weight layers; "all networks have about the same number of parameters", which the
paper does not state, so the hidden widths are solved for a common parameter budget (``param_budget``) given the
input size, transform and localisation net. Pass ``hidden``/``channels`` to fix the widths instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from stnkit import transforms as _transforms
from stnkit._checks import check_choice, check_tensor, normalize_size, shape_str
from stnkit.models._registry import register_model
from stnkit.models.localization import (
    cnn_localization,
    cnn_localization_params,
    fcn_localization,
    fcn_localization_params,
)
from stnkit.modules import SpatialTransformer

__all__ = [
    "CNN", "DEFAULT_PARAM_BUDGET", "FCN", "STClassifier", "ST_DOWNSAMPLE", "cnn_channels", "fcn_hidden", "st_sizes",
]

DEFAULT_PARAM_BUDGET = 150_000
ST_DOWNSAMPLE = ("output_size", "avgpool")


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    return cast("tuple[int, int]", normalize_size(size, 2, "input_size"))


def _check_image(x: Tensor, expected: tuple[int, int, int], model: str) -> None:
    check_tensor(x, "input")
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        c, h, w = expected
        raise ValueError(f"input of {model} must have shape (N, {c}, {h}, {w}); got {shape_str(x)}")


class FCN(nn.Module):
    """Fully-connected classifier: flatten -> FC -> ReLU -> FC -> ReLU -> FC (Table 1 "FCN").

    Args:
        input_size: (H, W) of the input (an int for square).
        in_channels: C.
        num_classes: number of output logits.
        hidden: widths of the two hidden layers.

    Shapes:
        (N, C, H, W) -> logits (N, num_classes).

    Example:
        >>> import torch
        >>> FCN(28, hidden=(64, 64))(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, input_size: int | Sequence[int], in_channels: int = 1, num_classes: int = 10,
        hidden: Sequence[int] = (128, 128),
    ) -> None:
        super().__init__()
        self.input_shape: tuple[int, int, int] = (in_channels, *_size2(input_size))
        h1, h2 = hidden
        c, h, w = self.input_shape
        self.net = nn.Sequential(
            nn.Flatten(),  # (N, C*H*W)
            nn.Linear(c * h * w, h1), nn.ReLU(inplace=True),
            nn.Linear(h1, h2), nn.ReLU(inplace=True),
            nn.Linear(h2, num_classes),
        )

    @staticmethod
    def num_params(in_features: int, hidden: Sequence[int], num_classes: int = 10) -> int:
        """Return the parameter count for flattened inputs of ``in_features`` values."""
        h1, h2 = hidden
        return (in_features + 1) * h1 + (h1 + 1) * h2 + (h2 + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Classify images (N, C, H, W) into logits (N, num_classes)."""
        _check_image(x, self.input_shape, "FCN")
        return self.net(x)


class CNN(nn.Module):
    """Convolutional classifier: conv 9x9 -> max-pool 2 -> conv 7x7 -> max-pool 2 -> FC (Table 1 "CNN").

    Convolutions are zero-padded ("same") so the same net runs on 21x21 transformer outputs and 60x60 inputs.

    Args:
        input_size: (H, W) of the input (an int for square).
        in_channels: C.
        num_classes: number of output logits.
        channels: filters of the two conv layers.

    Shapes:
        (N, C, H, W) -> logits (N, num_classes).

    Example:
        >>> import torch
        >>> CNN(28, channels=(16, 32))(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, input_size: int | Sequence[int], in_channels: int = 1, num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        self.input_shape: tuple[int, int, int] = (in_channels, *_size2(input_size))
        c1, c2 = channels
        _, h, w = self.input_shape
        if h < 4 or w < 4:
            raise ValueError(f"CNN needs inputs of at least 4x4 (two max-pools); got {(h, w)}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 9, padding=4), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (N, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 7, padding=3), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (N, c2, H/4, W/4)
            nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), num_classes),
        )

    @staticmethod
    def num_params(input_shape: tuple[int, int, int], channels: Sequence[int], num_classes: int = 10) -> int:
        """Return the parameter count for inputs of shape (C, H, W)."""
        c, h, w = input_shape
        c1, c2 = channels
        return (81 * c + 1) * c1 + (49 * c1 + 1) * c2 + (c2 * (h // 4) * (w // 4) + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Classify images (N, C, H, W) into logits (N, num_classes)."""
        _check_image(x, self.input_shape, "CNN")
        return self.net(x)


class STClassifier(nn.Module):
    """A spatial transformer in front of a classifier (Table 1 "ST-FCN", "ST-CNN").

    Args:
        transformer: the :class:`~stnkit.SpatialTransformer` applied to the input.
        classifier: the network classifying the transformer's (optionally pooled) output.
        avgpool: 2x2 average pooling after the transformer (the paper's downsampling for RTS and TC).

    Shapes:
        (N, C, H, W) -> logits (N, num_classes).
    """

    def __init__(self, transformer: SpatialTransformer, classifier: nn.Module, avgpool: bool = False) -> None:
        super().__init__()
        self.transformer = transformer
        self.classifier = classifier
        self.avgpool = bool(avgpool)

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the transformer's output (N, C, H_out, W_out) (before pooling) and its parameters (N, P)."""
        return self.transformer(x, return_params=True)

    def forward(self, x: Tensor) -> Tensor:
        """Classify images (N, C, H, W) into logits (N, num_classes)."""
        warped = self.transformer(x)  # (N, C, H_out, W_out)
        if self.avgpool:
            warped = F.avg_pool2d(warped, 2)  # (N, C, H_out/2, W_out/2)
        return self.classifier(warped)

    def extra_repr(self) -> str:
        return f"avgpool={self.avgpool}"


def _solve_width(count: Callable[[int], int], budget: int) -> int:
    """Return the width w >= 1 whose parameter count ``count(w)`` is closest to ``budget``."""
    return min(range(1, 4097), key=lambda w: abs(count(w) - budget))


def fcn_hidden(in_features: int, num_classes: int, budget: int) -> tuple[int, int]:
    """Return the two equal hidden widths of an FCN whose parameter count is closest to ``budget``.

    Example:
        >>> FCN.num_params(784, fcn_hidden(784, 10, 150_000), 10) <= 160_000
        True
    """
    w = _solve_width(lambda w: FCN.num_params(in_features, (w, w), num_classes), budget)
    return (w, w)


def cnn_channels(input_shape: tuple[int, int, int], num_classes: int, budget: int) -> tuple[int, int]:
    """Return the conv widths ``(w, 2w)`` of a CNN on ``input_shape`` (C, H, W) closest to ``budget`` parameters.

    The second layer has twice the filters of the first (the usual doubling after a pool).

    Example:
        >>> w1, w2 = cnn_channels((1, 28, 28), 10, 150_000)
        >>> w2 == 2 * w1
        True
    """
    w = _solve_width(lambda w: CNN.num_params(input_shape, (w, 2 * w), num_classes), budget)
    return (w, 2 * w)


@register_model("fcn")
def fcn(
    input_size: int | Sequence[int] = 28, in_channels: int = 1, num_classes: int = 10,
    hidden: Sequence[int] | None = None, param_budget: int = DEFAULT_PARAM_BUDGET,
) -> FCN:
    """FCN baseline; hidden widths solved for ``param_budget`` unless given."""
    size = _size2(input_size)
    hidden = hidden or fcn_hidden(in_channels * size[0] * size[1], num_classes, param_budget)
    return FCN(size, in_channels, num_classes, hidden)


@register_model("cnn")
def cnn(
    input_size: int | Sequence[int] = 28, in_channels: int = 1, num_classes: int = 10,
    channels: Sequence[int] | None = None, param_budget: int = DEFAULT_PARAM_BUDGET,
) -> CNN:
    """CNN baseline; conv widths solved for ``param_budget`` unless given."""
    size = _size2(input_size)
    channels = channels or cnn_channels((in_channels, *size), num_classes, param_budget)
    return CNN(size, in_channels, num_classes, channels)


def st_sizes(size: tuple[int, int], st_downsample: str | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return (transformer output size, classifier input size) for a downsampling choice.

    ``st_downsample`` is None or one of :data:`ST_DOWNSAMPLE`: ``"output_size"`` halves the transformer's output,
    ``"avgpool"`` pools its full-size output.

    Example:
        >>> st_sizes((42, 42), "output_size"), st_sizes((42, 42), "avgpool")
        (((21, 21), (21, 21)), ((42, 42), (21, 21)))
    """
    if st_downsample is None:
        return size, size
    check_choice(st_downsample, ST_DOWNSAMPLE, "st_downsample")
    half = (size[0] // 2, size[1] // 2)
    return (half if st_downsample == "output_size" else size), half


def _st_model(
    kind: str, input_size: int | Sequence[int], in_channels: int, num_classes: int, transform: str,
    st_downsample: str | None, param_budget: int, loc_lr_scale: float, bound: float | None,
    width: Sequence[int] | None,
) -> STClassifier:
    size = _size2(input_size)
    t = _transforms.get(transform)
    if t.spatial_dims != 2:
        raise ValueError(f"transform {t.name!r} is not a 2-D transform; ST models classify images")
    out_size, cls_size = st_sizes(size, st_downsample)
    if kind == "fcn":
        loc, feat = fcn_localization(in_channels * size[0] * size[1])
        loc_params = fcn_localization_params(in_channels * size[0] * size[1])
    else:
        loc, feat = cnn_localization(size, in_channels)
        loc_params = cnn_localization_params(size, in_channels)
    budget = param_budget - loc_params - (feat + 1) * t.num_params  # what is left for the classifier
    st = SpatialTransformer(loc, t, output_size=out_size, in_features=feat, bound=bound, loc_lr_scale=loc_lr_scale)
    if kind == "fcn":
        hidden = width or fcn_hidden(in_channels * cls_size[0] * cls_size[1], num_classes, budget)
        classifier: nn.Module = FCN(cls_size, in_channels, num_classes, hidden)
    else:
        channels = width or cnn_channels((in_channels, *cls_size), num_classes, budget)
        classifier = CNN(cls_size, in_channels, num_classes, channels)
    return STClassifier(st, classifier, avgpool=st_downsample == "avgpool")


@register_model("st-fcn")
def st_fcn(
    input_size: int | Sequence[int] = 28, in_channels: int = 1, num_classes: int = 10, transform: str = "affine",
    st_downsample: str | None = None, param_budget: int = DEFAULT_PARAM_BUDGET, loc_lr_scale: float = 1.0,
    bound: float | None = None, hidden: Sequence[int] | None = None,
) -> STClassifier:
    """ST-FCN: a spatial transformer (3 x 32-unit FC localisation) before an FCN."""
    return _st_model("fcn", input_size, in_channels, num_classes, transform, st_downsample, param_budget,
                     loc_lr_scale, bound, hidden)


@register_model("st-cnn")
def st_cnn(
    input_size: int | Sequence[int] = 28, in_channels: int = 1, num_classes: int = 10, transform: str = "affine",
    st_downsample: str | None = None, param_budget: int = DEFAULT_PARAM_BUDGET, loc_lr_scale: float = 1.0,
    bound: float | None = None, channels: Sequence[int] | None = None,
) -> STClassifier:
    """ST-CNN: a spatial transformer (two-conv localisation on the half-size input) before a CNN."""
    return _st_model("cnn", input_size, in_channels, num_classes, transform, st_downsample, param_budget,
                     loc_lr_scale, bound, channels)
