"""Localisation nets of the paper's distorted-MNIST models (Jaderberg et al. 2015, App. A.4), and a heatmap one.

Each builder returns the feature extractor and its output width F; :class:`stnkit.SpatialTransformer` adds the
identity-initialised regression layer to the transform's parameters on top. :func:`heatmap_localization` and
:class:`SoftArgmaxWindowHead` are the exception: a fully-convolutional score map whose soft-argmax is the attention
window's centre, for inputs large enough that regressing a position from fully-connected features fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from stnkit._checks import normalize_size

__all__ = [
    "SoftArgmaxWindowHead",
    "bounded_logit",
    "cnn_localization",
    "cnn_localization_params",
    "fcn_localization",
    "fcn_localization_params",
    "heatmap_localization",
]


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


def heatmap_localization(
    input_size: int | Sequence[int], in_channels: int = 1, map_input: int = 30, channels: int = 16
) -> tuple[nn.Module, tuple[int, int], int]:
    """Build a fully-convolutional score-map localisation net for :class:`SoftArgmaxWindowHead`.

    The input is average-pooled by ``pool = max(1, min(H, W) // map_input)`` (so the net sees about
    ``map_input`` pixels a side whatever the input's size), then conv 5x5 (``channels``, same padding) -> ReLU ->
    max-pool 2 -> conv 5x5 -> ReLU -> conv 1x1 to one score per cell. The last layer starts at zero: a uniform
    map, whose soft-argmax is the image centre. Every cell runs the same detector, so finding an object anywhere
    in a large input is one pattern to learn, not one position regression per place.

    Args:
        input_size: (H, W) of the input.
        in_channels: C.
        map_input: the side the input is pooled to before the convolutions.
        channels: filters of both conv layers.

    Returns:
        The net mapping (N, C, H, W) to scores (N, 1, h, w), the map size (h, w), and its stride in input pixels
        (``2 * pool``: map cell (i, j) covers input rows ``[i * stride, (i + 1) * stride)``).

    Example:
        >>> net, size, stride = heatmap_localization(120)
        >>> net(torch.rand(2, 1, 120, 120)).shape, size, stride
        (torch.Size([2, 1, 15, 15]), (15, 15), 8)
    """
    h, w = normalize_size(input_size, 2, "input_size")
    pool = max(1, min(h, w) // map_input)
    size = (h // pool // 2, w // pool // 2)
    if min(size) < 1:
        raise ValueError(f"the heatmap localisation net needs inputs of at least 2x2; got {(h, w)}")
    score = nn.Conv2d(channels, 1, 1)
    nn.init.zeros_(score.weight)
    nn.init.zeros_(cast(Tensor, score.bias))
    net = nn.Sequential(
        *([nn.AvgPool2d(pool)] if pool > 1 else []),
        nn.Conv2d(in_channels, channels, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 5, padding=2), nn.ReLU(inplace=True),
        score,  # (N, 1, h, w)
    )
    return net, size, 2 * pool


class SoftArgmaxWindowHead(nn.Module):
    """Attention window from a score map: centre = the soft-argmax of the scores, scale = one learned value.

    With scores ``z`` over the map's cells, ``p = softmax(z)`` and the window's centre is ``t = sum_k p_k c_k``,
    ``c_k`` the centre of cell k in the input's normalised frame; its scale ``s = lo + (hi - lo) * sigmoid(z_s)``
    with one learned ``z_s`` for all inputs. Output ``(s, tx, ty)`` of the ``"attention"`` transform. At a uniform
    map (the net's zero-initialised last layer) the window is centred. The gradient reaches every cell in
    proportion to its probability (``dt/dz_k = p_k (c_k - t)``), not only the pixels next to the window, which is
    what lets an attention window find an object far from where it starts. Computed in float32 under autocast.

    Args:
        map_size: (h, w) of the score map (features arrive flattened, (N, h * w)).
        stride: input pixels per map cell (cell (i, j) covers rows ``[i * stride, (i + 1) * stride)``).
        input_size: (H, W) of the transformer's input.
        scale_range: (lo, hi) of the window's scale (side over the input's); ``lo``/``hi`` may be changed later
            (e.g. by a schedule).
        init_scale: the scale at initialisation.
        align_corners: the transformer's frame convention (as :func:`torch.nn.functional.grid_sample`).

    Shapes:
        (N, h * w) -> (N, 3).

    Example:
        >>> head = SoftArgmaxWindowHead((15, 15), 8, (120, 120), (0.2, 0.4), 0.3)
        >>> torch.allclose(head(torch.zeros(2, 225)), torch.tensor([0.3, 0.0, 0.0]), atol=1e-6)  # uniform: centred
        True
    """

    centres_x: Tensor
    centres_y: Tensor

    def __init__(self, map_size: int | Sequence[int], stride: int, input_size: int | Sequence[int],
                 scale_range: tuple[float, float] = (0.2, 0.4), init_scale: float = 0.3,
                 align_corners: bool = False) -> None:
        super().__init__()
        h, w = normalize_size(map_size, 2, "map_size")
        ih, iw = normalize_size(input_size, 2, "input_size")
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo < hi or not lo < init_scale < hi:
            raise ValueError(f"need 0 < lo < init_scale < hi; got scale_range {scale_range}, init_scale {init_scale}")
        if stride < 1 or h * stride > ih or w * stride > iw:
            raise ValueError(f"a {(h, w)} map with stride {stride} does not fit a {(ih, iw)} input")
        self.map_size, self.stride, self.input_size = (h, w), int(stride), (ih, iw)
        self.lo, self.hi, self.align_corners = lo, hi, bool(align_corners)
        self.register_buffer("centres_x", _cell_centres(w, stride, iw, align_corners), persistent=False)
        self.register_buffer("centres_y", _cell_centres(h, stride, ih, align_corners), persistent=False)
        self.scale_logit = nn.Parameter(torch.tensor(bounded_logit(init_scale, lo, hi)))

    def forward(self, features: Tensor) -> Tensor:
        """Window parameters (N, 3) from flattened scores (N, h * w)."""
        h, w = self.map_size
        if features.ndim != 2 or features.shape[1] != h * w:
            raise ValueError(f"SoftArgmaxWindowHead expects scores of shape (N, {h * w}) (a {h}x{w} map, "
                             f"flattened); got {tuple(features.shape)}")
        n = features.shape[0]
        z = features if features.dtype in (torch.float32, torch.float64) else features.float()  # f32 grids
        with torch.autocast(z.device.type, enabled=False):
            p = torch.softmax(z, dim=1).view(n, h, w)  # (N, h, w)
            tx = p.sum(1) @ self.centres_x.to(z.dtype)  # (N,): the column marginal
            ty = p.sum(2) @ self.centres_y.to(z.dtype)  # (N,)
            s = self.lo + (self.hi - self.lo) * torch.sigmoid(self.scale_logit.to(z.dtype))
            return torch.stack([s.expand(n), tx, ty], dim=1)  # (N, 3)

    def extra_repr(self) -> str:
        return (f"map_size={self.map_size}, stride={self.stride}, input_size={self.input_size}, "
                f"scale_range=({self.lo}, {self.hi})")


def bounded_logit(value: float, lo: float, hi: float) -> float:
    """The z with ``lo + (hi - lo) * sigmoid(z) == value``: the initial logit of a bounded window scale."""
    u = (value - lo) / (hi - lo)
    return math.log(u / (1 - u))


def _cell_centres(cells: int, stride: int, size: int, align_corners: bool) -> Tensor:
    """Normalised coordinates (cells,) of the centres of map cells ``stride`` pixels wide in a ``size``-pixel axis."""
    px = (torch.arange(cells, dtype=torch.float32) + 0.5) * stride - 0.5  # pixel-index coordinate of each centre
    return 2 * px / (size - 1) - 1 if align_corners else (2 * px + 1) / size - 1
