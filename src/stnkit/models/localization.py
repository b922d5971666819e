"""Localisation nets of the paper's distorted-MNIST models (Jaderberg et al. 2015, App. A.4).

Each builder returns the feature extractor and its output width F; :class:`stnkit.SpatialTransformer` adds the
identity-initialised regression layer to the transform's parameters on top.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["cnn_localization", "cnn_localization_params", "fcn_localization", "fcn_localization_params"]


def fcn_localization(in_features: int, hidden: Sequence[int] = (32, 32, 32)) -> tuple[nn.Module, int]:
    """Build the ST-FCN localisation net: flatten, then fully-connected ReLU layers (3 x 32 units in the paper).

    Args:
        in_features: C * H * W of the input (N, C, H, W).
        hidden: units of each hidden layer.

    Returns:
        The module mapping (N, C, H, W) to (N, hidden[-1]) and that width.

    Example:
        >>> import torch
        >>> net, f = fcn_localization(28 * 28)
        >>> net(torch.rand(2, 1, 28, 28)).shape, f
        (torch.Size([2, 32]), 32)
    """
    if not hidden:
        raise ValueError("hidden must name at least one layer width")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    return nn.Sequential(*layers), width


def fcn_localization_params(in_features: int, hidden: Sequence[int] = (32, 32, 32)) -> int:
    """Return the parameter count of :func:`fcn_localization` (without the regression layer)."""
    widths = [in_features, *hidden]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def _cnn_feature_size(size: int) -> int:
    # avg-pool 2 -> conv 5x5 (valid) -> max-pool 2 -> conv 5x5 (valid)
    return (size // 2 - 4) // 2 - 4


def cnn_localization(
    input_size: tuple[int, int], in_channels: int = 1, channels: int = 20, hidden: int = 20
) -> tuple[nn.Module, int]:
    """Build the ST-CNN localisation net: on the input downsampled by 2, conv 5x5 -> max-pool 2 -> conv 5x5 -> FC.

    The paper's net has two 20-filter 5x5 conv layers with a max-pool between and a 20-unit FC layer, on the input
    downsampled by 2 (here a 2x2 average pool, so the localisation costs a quarter of full resolution).

    Args:
        input_size: (H, W) of the input.
        in_channels: C of the input.
        channels: filters of both conv layers.
        hidden: units of the FC layer.

    Returns:
        The module mapping (N, C, H, W) to (N, hidden) and ``hidden``.

    Raises:
        ValueError: input too small for two valid 5x5 convolutions after downsampling (H, W >= 26).

    Example:
        >>> import torch
        >>> net, f = cnn_localization((42, 42))
        >>> net(torch.rand(2, 1, 42, 42)).shape, f
        (torch.Size([2, 20]), 20)
    """
    fh, fw = (_cnn_feature_size(s) for s in input_size)
    if fh < 1 or fw < 1:
        raise ValueError(f"the ST-CNN localisation net needs inputs of at least 26x26; got {tuple(input_size)}")
    net = nn.Sequential(
        nn.AvgPool2d(2),
        nn.Conv2d(in_channels, channels, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 5),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(channels * fh * fw, hidden),  # (N, hidden)
        nn.ReLU(inplace=True),
    )
    return net, hidden


def cnn_localization_params(
    input_size: tuple[int, int], in_channels: int = 1, channels: int = 20, hidden: int = 20
) -> int:
    """Return the parameter count of :func:`cnn_localization` (without the regression layer)."""
    fh, fw = (_cnn_feature_size(s) for s in input_size)
    conv = (in_channels * 25 + 1) * channels + (channels * 25 + 1) * channels
    return conv + channels * fh * fw * hidden + hidden
