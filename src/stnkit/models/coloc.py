"""Co-localisation models (Jaderberg et al. 2015, App. A.2): the attention transformer and the frozen encoder.

The transformer's localisation net is the paper's: conv 8 filters 9x9 stride 4 -> max-pool 2x2 stride 2 -> two
fully-connected layers of 8 units -> 3 outputs (the attention transform's scale and translation). The encoder
e(.) is a Table 1 CNN trained to classify MNIST, frozen; the embedding of a crop concatenates the activations of
its three layers (the two conv layers after ReLU and max-pool, and the classification layer without softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stnkit._checks import normalize_size
from stnkit.models.mnist import CNN
from stnkit.modules import SpatialTransformer

__all__ = ["CNNEmbedding", "coloc_localization", "coloc_transformer"]


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


def coloc_transformer(input_size: int | Sequence[int] = 84, in_channels: int = 1, crop: int = 28,
             init_scale: float | None = None) -> SpatialTransformer:
    """Build the co-localisation transformer: an attention crop of ``crop`` x ``crop`` pixels.

    Not in the model registry, whose models are classifiers (inputs -> logits); this maps (N, C, 84, 84) images to
    (N, C, crop, crop) crops and is trained by :mod:`stnkit.training.coloc`.

    Args:
        input_size: (H, W) of the input images.
        in_channels: C.
        crop: output side (the encoder's input size, 28 for MNIST).
        init_scale: start from a centred window of this scale (e.g. ``crop / 84``) instead of the identity (the
            whole image): the bias of the regression layer is set to ``(init_scale, 0, 0)``.

    Example:
        >>> st = coloc_transformer(init_scale=1 / 3)
        >>> st(torch.rand(2, 1, 84, 84)).shape
        torch.Size([2, 1, 28, 28])
    """
    loc, feat = coloc_localization(input_size, in_channels)
    st = SpatialTransformer(loc, "attention", output_size=crop, in_features=feat)
    if init_scale is not None:
        with torch.no_grad():
            st.head.bias.copy_(torch.tensor([float(init_scale), 0.0, 0.0]))
    return st


class CNNEmbedding(nn.Module):
    """Frozen embedding e(.) of a Table 1 CNN: its three layers' activations, flattened and concatenated.

    The CNN is put in eval mode and its parameters stop requiring gradients (gradients still flow to the input,
    which is how the transformer in front of it learns).

    Args:
        cnn: a trained :class:`~stnkit.models.CNN`.

    Shapes:
        (N, C, H, W) -> (N, c1 * H/2 * W/2 + c2 * H/4 * W/4 + num_classes).

    Example:
        >>> e = CNNEmbedding(CNN(28, channels=(4, 8)))
        >>> e(torch.rand(2, 1, 28, 28)).shape  # 4*14*14 + 8*7*7 + 10
        torch.Size([2, 1186])
    """

    def __init__(self, cnn: CNN) -> None:
        super().__init__()
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
                feats.append(x.flatten(1))  # (N, D_i)
        return torch.cat(feats, dim=1)  # (N, D)
