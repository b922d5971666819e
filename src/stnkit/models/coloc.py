"""Co-localisation models (Jaderberg et al. 2015, App. A.2): the attention transformer and the frozen encoder.

The transformer's localisation net is the paper's: conv 8 filters 9x9 stride 4 -> max-pool 2x2 stride 2 -> two
fully-connected layers of 8 units -> 3 outputs (the attention transform's scale and translation). The encoder
e(.) is a Table 1 CNN trained to classify MNIST, frozen; the embedding of a crop concatenates the activations of
its three layers (the two conv layers after ReLU and max-pool, and the classification layer without softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit._checks import normalize_size
from stnkit.models.localization import SoftArgmaxWindowHead, bounded_logit, heatmap_localization
from stnkit.models.mnist import CNN
from stnkit.modules import LocalizationHead, SpatialTransformer

__all__ = ["LOCALIZATIONS", "AttentionWindowHead", "CNNEmbedding", "coloc_localization", "coloc_transformer"]

LOCALIZATIONS = ("paper", "heatmap")


def coloc_localization(input_size: int | Sequence[int] = 84, in_channels: int = 1, hidden: int = 8
                       ) -> tuple[nn.Module, int]:
    """Build the co-localisation localisation net: conv 8@9x9 stride 4 -> max-pool 2 -> FC 8 -> FC 8.

    Args:
        input_size: (H, W) of the input (84 in the paper).
        in_channels: C.
        hidden: units of both FC layers.

    Returns:
        The module mapping (N, C, H, W) to (N, hidden) and ``hidden``.

    Example:
        >>> net, f = coloc_localization(84)
        >>> net(torch.rand(2, 1, 84, 84)).shape, f
        (torch.Size([2, 8]), 8)
    """
    h, w = normalize_size(input_size, 2, "input_size")
    fh, fw = ((h - 9) // 4 + 1) // 2, ((w - 9) // 4 + 1) // 2  # conv 9 stride 4 (valid), max-pool 2
    if fh < 1 or fw < 1:
        raise ValueError(f"the co-localisation net needs inputs of at least 17x17; got {(h, w)}")
    net = nn.Sequential(
        nn.Conv2d(in_channels, 8, 9, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (N, 8, fh, fw)
        nn.Flatten(),
        nn.Linear(8 * fh * fw, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True),  # (N, hidden)
    )
    return net, hidden


class AttentionWindowHead(LocalizationHead):
    """Regression head of a window that stays inside the image: scale in a range, translation keeping it inside.

    Outputs ``(s, tx, ty)`` of the ``"attention"`` transform with ``s = lo + (hi - lo) * sigmoid(z_s)`` and
    ``t = (1 - s) * tanh(z_t)``. Without these bounds the triplet loss has trivial minima the paper's results rule
    out: shrinking the window to a point, or moving it off the image, makes every crop the same.

    Args:
        in_features: F of the localisation features.
        scale_range: (lo, hi) of the window's scale (its side over the image's).
        init_scale: the scale at initialisation (zero weights: a centred window for every input).

    Example:
        >>> head = AttentionWindowHead(8, (0.25, 0.6), 1 / 3)
        >>> head(torch.rand(2, 8))[0]
        tensor([0.3333, 0.0000, 0.0000], grad_fn=<SelectBackward0>)
    """

    def __init__(self, in_features: int, scale_range: tuple[float, float] = (0.25, 0.6), init_scale: float = 0.5
                 ) -> None:
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo < hi <= 1 or not lo < init_scale < hi:
            raise ValueError(f"need 0 < lo < init_scale < hi <= 1; got scale_range {scale_range}, init_scale "
                             f"{init_scale}")
        super().__init__(torch.tensor([bounded_logit(init_scale, lo, hi), 0.0, 0.0]), in_features)  # s = init_scale
        self.lo, self.hi = lo, hi

    def forward(self, features: Tensor) -> Tensor:
        """Regress window parameters (N, 3) from features (N, F)."""
        z = F.linear(features, self.weight, self.bias)  # (N, 3)
        s = self.lo + (self.hi - self.lo) * torch.sigmoid(z[:, :1])  # (N, 1)
        return torch.cat([s, (1 - s) * torch.tanh(z[:, 1:])], dim=1)  # (N, 3)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_range=({self.lo}, {self.hi})"


def coloc_transformer(input_size: int | Sequence[int] = 84, in_channels: int = 1, crop: int = 28,
                      scale_range: tuple[float, float] | None = (0.25, 0.6), init_scale: float = 0.5,
                      localization: str = "paper") -> SpatialTransformer:
    """Build the co-localisation transformer: an attention crop of ``crop`` x ``crop`` pixels.

    Not in the model registry, whose models are classifiers (inputs -> logits); this maps (N, C, 84, 84) images to
    (N, C, crop, crop) crops and is trained by :mod:`stnkit.training.coloc`.

    Args:
        input_size: (H, W) of the input images.
        in_channels: C.
        crop: output side (the encoder's input size, 28 for MNIST).
        scale_range: bounds of the window's scale (:class:`AttentionWindowHead`, window kept inside the image); None
            for the plain identity-initialised regression (unbounded, starting from the whole image).
        init_scale: the window's scale at initialisation, centred (with ``scale_range``): 0.5 overlaps most digits
            (28/84 = 0.33 is a digit's size), so the loss has a gradient for most images from the start.
        localization: ``"paper"`` (the net above) or ``"heatmap"``: a score map whose soft-argmax is the window's
            centre (:func:`~stnkit.models.localization.heatmap_localization`,
            :class:`~stnkit.models.localization.SoftArgmaxWindowHead`; needs ``scale_range``). The paper's net
            regresses the window from fully-connected features of each image; the score map runs one detector
            at every place, so what it learns on the images whose window already overlaps the digit moves the
            windows of the others too.

    Example:
        >>> st = coloc_transformer()
        >>> st(torch.rand(2, 1, 84, 84)).shape
        torch.Size([2, 1, 28, 28])
    """
    if localization not in LOCALIZATIONS:
        raise ValueError(f"unknown localization {localization!r}; expected one of {', '.join(LOCALIZATIONS)}")
    if localization == "heatmap":
        if scale_range is None:
            raise ValueError("the heatmap localisation needs a scale_range (its window's scale is bounded)")
        loc, map_size, stride = heatmap_localization(input_size, in_channels)
        head = SoftArgmaxWindowHead(map_size, stride, input_size, scale_range, init_scale)
        return SpatialTransformer(loc, "attention", output_size=crop, head=head)
    loc, feat = coloc_localization(input_size, in_channels)
    if scale_range is None:
        return SpatialTransformer(loc, "attention", output_size=crop, in_features=feat)
    return SpatialTransformer(loc, "attention", output_size=crop,
                              head=AttentionWindowHead(feat, scale_range, init_scale))


class CNNEmbedding(nn.Module):
    """Frozen embedding e(.) of a Table 1 CNN: its three layers' activations, flattened and concatenated.

    The CNN is put in eval mode and its parameters stop requiring gradients (gradients still flow to the input,
    which is how the transformer in front of it learns). With ``normalize`` each layer's activation vector is
    scaled to unit length before concatenation: the raw first layer has ~20x the dimensions of the others and
    squared distances in the thousands, which would both drown the other layers and make the triplet loss's margin
    of 1 meaningless; normalised, every layer counts and distances lie in [0, 12].

    Args:
        cnn: a trained :class:`~stnkit.models.CNN`.
        normalize: scale each layer's activations to unit L2 norm.

    Shapes:
        (N, C, H, W) -> (N, c1 * H/2 * W/2 + c2 * H/4 * W/4 + num_classes).

    Example:
        >>> e = CNNEmbedding(CNN(28, channels=(4, 8)))
        >>> e(torch.rand(2, 1, 28, 28)).shape  # 4*14*14 + 8*7*7 + 10
        torch.Size([2, 1186])
    """

    def __init__(self, cnn: CNN, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        if not isinstance(cnn, CNN):
            raise TypeError(f"CNNEmbedding needs a stnkit.models.CNN; got {type(cnn).__name__}")
        self.cnn = cnn
        self.cnn.requires_grad_(False)
        self.cnn.eval()
        self._taps = (2, 5, len(cnn.net) - 1)  # after max-pool 1, after max-pool 2, the logits

    def train(self, mode: bool = True) -> CNNEmbedding:
        """Keep the encoder in eval mode whatever the surrounding module does (it is frozen)."""
        super().train(mode)
        self.cnn.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Embed images (N, C, H, W) into (N, D)."""
        feats = []
        for i, layer in enumerate(self.cnn.net):
            x = layer(x)
            if i in self._taps:
                f = x.flatten(1)  # (N, D_i)
                feats.append(F.normalize(f, dim=1, eps=1e-6) if self.normalize else f)
        return torch.cat(feats, dim=1)  # (N, D)
