"""The multi-digit SVHN networks of Jaderberg et al. 2015 (Sec. 4.2, App. A.5): CNN, ST-CNN Single, ST-CNN Multi.

Baseline (Goodfellow et al. 2014's 11-hidden-layer net, as A.5 lists it): eight 5x5 conv layers with
[48, 64, 128, 160, 192, 192, 192, 192] filters, zero-padded ("same"), each followed by a ReLU and a 2x2 max-pool
whose stride alternates 2, 1, 2, 1, ... (Goodfellow et al.), so a 64x64 input ends at 4x4x192 = 3072 features;
two fully-connected ReLU layers of 3072 units; then, as Goodfellow et al., a length head (6 classes: 0-5 digits)
and five independent digit heads of 11 classes (10 = "no digit", Jaderberg et al.), computed by one linear layer
whose 5 x 11 outputs are the heads' (independent weights, one matmul). Ours: ReLU everywhere (Goodfellow's first
layer is maxout), no local contrast normalisation. Dropout 0.5 after every hidden layer except the first conv (and
none in the localisation nets), as A.5. A stride-1 2x2 pool pads one zero column/row at the right/bottom (exact
for the non-negative ReLU outputs); it shifts its map by half a pixel of that map.

ST-CNN Single: one affine transformer on the input, localisation conv[32,5,1,2]-max[2]-conv[32,5,1,2]-fc[32]-fc[32]
(A.5's four-layer CNN), output at the input's size. ST-CNN Multi: a transformer before each of the first four conv
layers, on the feature maps, each localisation fc[32]-fc[32] on the flattened map, output at the map's size. All
localisation nets train at a tenth of the base learning rate (``loc_lr_scale=0.1``, see
:func:`stnkit.modules.param_groups`). ``width`` scales every conv and FC width (for CPU tests and the proxy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from stnkit import transforms as _transforms
from stnkit._checks import check_tensor, shape_str
from stnkit.grid import denormalize_points
from stnkit.models._registry import register_model
from stnkit.modules import SpatialTransformer
from stnkit.transforms.base import MatrixTransform

__all__ = ["CONV_CHANNELS", "FC_UNITS", "LENGTH_CLASSES", "LOC_UNITS", "MAX_DIGITS", "NUM_DIGIT_CLASSES",
           "SequenceLogits", "SequenceNet", "compose_frames", "region_corners"]

CONV_CHANNELS = (48, 64, 128, 160, 192, 192, 192, 192)
FC_UNITS = 3072
LOC_UNITS = 32
MAX_DIGITS = 5
NUM_DIGIT_CLASSES = 11  # 0-9 and 10 = no digit
LENGTH_CLASSES = MAX_DIGITS + 1  # 0-5 digits


class SequenceLogits(NamedTuple):
    """Outputs of a :class:`SequenceNet`.

    Attributes:
        length: (N, 6) logits of the sequence length 0-5.
        digits: (N, 5, 11) logits of each position's digit (class 10: no digit).
    """

    length: Tensor
    digits: Tensor


def _scaled(units: int, width: float) -> int:
    return max(1, round(units * width))


def _pool(stride: int) -> nn.Module:
    if stride == 2:
        return nn.MaxPool2d(2)
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, stride=1))  # same size; inputs are >= 0


class SequenceNet(nn.Module):
    """Goodfellow et al.'s sequence CNN with optional spatial transformers before its conv layers.

    Args:
        input_size: S of the square input (a multiple of 16 keeps every pool exact; at least 16).
        in_channels: C.
        width: multiplier of every conv and FC width (1.0: the paper's).
        dropout: probability of the dropout after every hidden layer but the first conv.
        transformers: ``{k: transformer}``, the transformer applied to the input of conv layer k (0-based).
        batch_norm: a BatchNorm after every conv and hidden FC layer (before its ReLU; the convs then have no
            bias). Not in A.5 or Goodfellow et al.; an option for short CPU runs.

    Shapes:
        (N, C, S, S) -> :class:`SequenceLogits` ``length`` (N, 6), ``digits`` (N, 5, 11).

    Example:
        >>> out = SequenceNet(64, width=0.125)(torch.rand(2, 3, 64, 64))
        >>> out.length.shape, out.digits.shape
        (torch.Size([2, 6]), torch.Size([2, 5, 11]))
    """

    def __init__(self, input_size: int = 64, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5,
                 transformers: dict[int, SpatialTransformer] | None = None, batch_norm: bool = False) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"SequenceNet needs inputs of at least 16x16 (four stride-2 pools); got {input_size}")
        if width <= 0 or not 0 <= dropout < 1:
            raise ValueError(f"width must be > 0 and dropout in [0, 1); got {width}, {dropout}")
        transformers = transformers or {}
        if any(k not in range(len(CONV_CHANNELS)) for k in transformers):
            raise ValueError(f"transformers must be keyed by conv layer 0-{len(CONV_CHANNELS) - 1}; got "
                             f"{sorted(transformers)}")
        self.input_shape = (in_channels, input_size, input_size)
        channels = [_scaled(c, width) for c in CONV_CHANNELS]
        blocks, c_in, size = [], in_channels, input_size
        for i, c in enumerate(channels):
            stride = 2 if i % 2 == 0 else 1
            norm = [nn.BatchNorm2d(c)] if batch_norm else []
            layers = [nn.Conv2d(c_in, c, 5, padding=2, bias=not batch_norm), *norm, nn.ReLU(inplace=True),
                      _pool(stride)]
            if i > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))  # (N, c, size / stride, size / stride)
            c_in, size = c, size // stride
        self.blocks = nn.ModuleList(blocks)
        fc = _scaled(FC_UNITS, width)
        self.features = c_in * size * size
        fc_norm = (lambda: [nn.BatchNorm1d(fc)]) if batch_norm else (lambda: [])
        self.fc = nn.Sequential(
            nn.Flatten(),  # (N, c8 * S/16 * S/16)
            nn.Linear(self.features, fc), *fc_norm(), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, fc), *fc_norm(), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.length_head = nn.Linear(fc, LENGTH_CLASSES)
        self.digit_heads = nn.Linear(fc, MAX_DIGITS * NUM_DIGIT_CLASSES)  # five independent 11-way classifiers
        self.transformers = nn.ModuleDict({str(k): st for k, st in sorted(transformers.items())})

    @staticmethod
    def feature_shapes(input_size: int = 64, in_channels: int = 3, width: float = 1.0) -> list[tuple[int, int, int]]:
        """Return the (C, H, W) input of each conv layer: where a transformer before layer k acts.

        Example:
            >>> SequenceNet.feature_shapes()[:4]
            [(3, 64, 64), (48, 32, 32), (64, 32, 32), (128, 16, 16)]
        """
        shapes, c, size = [], in_channels, input_size
        for i, units in enumerate(CONV_CHANNELS):
            shapes.append((c, size, size))
            c, size = _scaled(units, width), size // (2 if i % 2 == 0 else 1)
        return shapes

    def forward(self, x: Tensor, return_params: bool = False) -> SequenceLogits | tuple[SequenceLogits, list[Tensor]]:
        """Return the sequence logits of images (N, C, S, S) (and each transformer's parameters (N, P), in order)."""
        check_tensor(x, "input")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise ValueError(f"input of SequenceNet must have shape (N, {c}, {h}, {w}); got {shape_str(x)}")
        params = []
        for i, block in enumerate(self.blocks):
            if str(i) in self.transformers:
                x, p = self.transformers[str(i)](x, return_params=True)  # same size: the map's own frame
                params.append(p)
            x = block(x)
        h = self.fc(x)  # (N, fc)
        out = SequenceLogits(self.length_head(h), self.digit_heads(h).view(-1, MAX_DIGITS, NUM_DIGIT_CLASSES))
        return (out, params) if return_params else out

    def attended_regions(self, x: Tensor) -> list[Tensor]:
        """Return, per transformer, the map from its output frame to the INPUT image's normalised frame.

        Convs and pools keep a map's normalised frame (up to the half-pixel shift of a stride-1 pool), so the
        frame a later transformer sees is the previous transformer's output frame, and transformer k maps its
        output to the input by ``A_1 @ ... @ A_k`` (:func:`compose_frames`). Use :func:`region_corners` for pixels.

        Args:
            x: input images (N, C, S, S).

        Returns:
            One (N, 3, 3) ``input_from_output`` matrix per transformer, in order (normalised, output -> source).
        """
        _, params = self.forward(x, return_params=True)
        matrices = []
        for st, p in zip(self.transformers.values(), params):
            t = cast(SpatialTransformer, st).transform
            if not isinstance(t, MatrixTransform):
                raise ValueError(f"attended_regions needs matrix transforms; got {t.name!r}")
            matrices.append(t.to_matrix(p))  # (N, 3, 3)
        return compose_frames(matrices)


def compose_frames(matrices: Sequence[Tensor]) -> list[Tensor]:
    """Compose serial transformers' frames: stage k's output -> the first stage's input, ``A_1 @ ... @ A_k``.

    Args:
        matrices: per stage (N, 3, 3) ``stage_input_from_stage_output`` in normalised coordinates, where stage k's
            input frame is stage k-1's output frame.

    Returns:
        A list of (N, 3, 3) ``input_from_stage_output``.

    Example:
        >>> a = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]]])
        >>> compose_frames([a, a])[1][0, 0]
        tensor([0.2500, 0.0000, 0.1500])
    """
    out: list[Tensor] = []
    for m in matrices:
        out.append(m if not out else out[-1] @ m)  # input <- previous output <- this output
    return out


def region_corners(input_from_output: Tensor, input_size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Return the corners of a transformer's output frame in input pixel-edge coordinates.

    Args:
        input_from_output: (N, 3, 3) from :meth:`SequenceNet.attended_regions`, normalised.
        input_size: (H, W) of the input image.
        align_corners: the transformers' frame convention.

    Returns:
        (N, 4, 2) ``(x, y)`` of the output's top-left, top-right, bottom-right and bottom-left corners; pixel ``i``
        spans ``[i, i + 1]`` (as :func:`stnkit.losses.attended_box`).

    Example:
        >>> region_corners(torch.eye(3)[None], (64, 64))[0, 2]
        tensor([64., 64.])
    """
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]],
                           dtype=input_from_output.dtype, device=input_from_output.device)  # (4, 3) homogeneous
    src = corners @ input_from_output.transpose(1, 2)  # (N, 4, 3)
    src = src[..., :2] / src[..., 2:]  # (N, 4, 2) normalised
    return denormalize_points(src, tuple(input_size), align_corners) + 0.5


def _single_localization(shape: tuple[int, int, int], width: float) -> nn.Module:
    c, h, w = shape
    k, units = _scaled(LOC_UNITS, width), _scaled(LOC_UNITS, width)
    return nn.Sequential(
        nn.Conv2d(c, k, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (N, k, H/2, W/2)
        nn.Conv2d(k, k, 5, padding=2), nn.ReLU(inplace=True),
        nn.Flatten(),  # (N, k * H/2 * W/2)
        nn.Linear(k * (h // 2) * (w // 2), units), nn.ReLU(inplace=True),
        nn.Linear(units, units), nn.ReLU(inplace=True),
    )


def _fc_localization(shape: tuple[int, int, int], width: float) -> nn.Module:
    c, h, w = shape
    units = _scaled(LOC_UNITS, width)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, units), nn.ReLU(inplace=True),
                         nn.Linear(units, units), nn.ReLU(inplace=True))  # (N, units)


def _transformer(loc: nn.Module, width: float, transform: str, loc_lr_scale: float) -> SpatialTransformer:
    t = _transforms.get(transform)
    if not isinstance(t, MatrixTransform) or t.spatial_dims != 2:
        raise ValueError(f"SVHN transformers need a 2-D matrix transform (affine family, projective); got "
                         f"{transform!r}")
    return SpatialTransformer(loc, t, in_features=_scaled(LOC_UNITS, width), loc_lr_scale=loc_lr_scale)


@register_model("svhn-cnn")
def svhn_cnn(input_size: int = 64, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5,
             batch_norm: bool = False) -> SequenceNet:
    """The baseline CNN (Goodfellow et al. 2014, App. A.5); ``batch_norm`` as :class:`SequenceNet`'s."""
    return SequenceNet(input_size, in_channels, width, dropout, batch_norm=batch_norm)


@register_model("svhn-st-single")
def svhn_st_single(input_size: int = 64, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5,
                   transform: str = "affine", loc_lr_scale: float = 0.1, batch_norm: bool = False) -> SequenceNet:
    """ST-CNN Single: one transformer (four-layer CNN localisation) on the input; no BatchNorm in it."""
    shape = SequenceNet.feature_shapes(input_size, in_channels, width)[0]
    st = _transformer(_single_localization(shape, width), width, transform, loc_lr_scale)
    return SequenceNet(input_size, in_channels, width, dropout, {0: st}, batch_norm)


@register_model("svhn-st-multi")
def svhn_st_multi(input_size: int = 64, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5,
                  transform: str = "affine", loc_lr_scale: float = 0.1, num_transformers: int = 4,
                  batch_norm: bool = False) -> SequenceNet:
    """ST-CNN Multi: a transformer (fc[32]-fc[32] localisation) before each of the first four conv layers."""
    shapes = SequenceNet.feature_shapes(input_size, in_channels, width)
    if not 1 <= num_transformers <= len(shapes):
        raise ValueError(f"num_transformers must be in [1, {len(shapes)}]; got {num_transformers}")
    sts = {k: _transformer(_fc_localization(shapes[k], width), width, transform, loc_lr_scale)
           for k in range(num_transformers)}
    return SequenceNet(input_size, in_channels, width, dropout, sts, batch_norm)
