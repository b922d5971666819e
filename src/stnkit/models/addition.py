"""Parallel spatial transformers before one classifier: the 2xST-FCN of MNIST addition (App. A.1).

Each transformer has its own ST-FCN localisation net, sees the whole input (both digit channels) and warps all its
channels; the outputs are concatenated on channels (2 transformers x 2 channels = 4) and classified by an FCN.
The paper's FCN, CNN and single ST-FCN rows are the Table 1 factories (``"fcn"``, ``"cnn"``, ``"st-fcn"``) built
with ``in_channels=2, num_classes=19``. Widths are solved for the same ``param_budget`` as those.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from stnkit import transforms as _transforms
from stnkit._checks import normalize_size
from stnkit.models._registry import register_model
from stnkit.models.localization import fcn_localization, fcn_localization_params
from stnkit.models.mnist import DEFAULT_PARAM_BUDGET, FCN, fcn_hidden, st_sizes
from stnkit.modules import ParallelSpatialTransformers, SpatialTransformer

__all__ = ["ParallelSTClassifier"]


class ParallelSTClassifier(nn.Module):
    """Spatial transformers in parallel on the same input, their outputs concatenated, then a classifier.

    Args:
        transformers: the branches (merged by channel concatenation).
        classifier: network on the concatenated (optionally pooled) outputs.
        avgpool: 2x2 average pooling after the transformers (the paper's downsampling for RTS digits).

    Shapes:
        (N, C, H, W) -> logits (N, num_classes); the classifier sees (N, k*C, H_out, W_out).

    Example:
        >>> import torch
        >>> model = st_fcn_x2(input_size=28, in_channels=2, num_classes=19)
        >>> model(torch.rand(3, 2, 28, 28)).shape
        torch.Size([3, 19])
    """

    def __init__(self, transformers: ParallelSpatialTransformers, classifier: nn.Module, avgpool: bool = False
                 ) -> None:
        super().__init__()
        self.transformers = transformers
        self.classifier = classifier
        self.avgpool = bool(avgpool)

    def transform(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Return the concatenated outputs (N, k*C, H_out, W_out) (before pooling) and each branch's params."""
        return self.transformers(x, return_params=True)

    def forward(self, x: Tensor) -> Tensor:
        """Classify inputs (N, C, H, W) into logits (N, num_classes)."""
        warped = self.transformers(x)  # (N, k*C, H_out, W_out)
        if self.avgpool:
            warped = F.avg_pool2d(warped, 2)  # (N, k*C, H_out/2, W_out/2)
        return self.classifier(warped)

    def extra_repr(self) -> str:
        return f"avgpool={self.avgpool}"


@register_model("st-fcn-x2")
def st_fcn_x2(
    input_size: int | Sequence[int] = 42, in_channels: int = 1, num_classes: int = 10, transform: str = "affine",
    st_downsample: str | None = None, param_budget: int = DEFAULT_PARAM_BUDGET, loc_lr_scale: float = 1.0,
    bound: float | None = None, hidden: Sequence[int] | None = None, branches: int = 2,
) -> ParallelSTClassifier:
    """2xST-FCN: ``branches`` transformers (3 x 32-unit FC localisation each) in parallel, then an FCN.

    Args:
        input_size: (H, W) of the input (an int for square).
        in_channels: C (2 for MNIST addition); every branch warps all of them.
        num_classes: logits (19 sums for addition).
        transform: transform of every branch (``"affine"``, ``"projective"``, ``"tps"``, ...).
        st_downsample: None, ``"output_size"`` or ``"avgpool"``: halve the branches' outputs (as ``"st-fcn"``).
        param_budget: total parameters the FCN's hidden widths are solved for (what the branches leave).
        loc_lr_scale: learning-rate multiplier of the localisation nets.
        bound: optional bound of the parameters around the identity.
        hidden: the FCN's two hidden widths, instead of solving them.
        branches: number of parallel transformers.
    """
    h, w = normalize_size(input_size, 2, "input_size")
    size = (h, w)
    if branches < 1:
        raise ValueError(f"branches must be >= 1; got {branches}")
    t = _transforms.get(transform)
    if t.spatial_dims != 2:
        raise ValueError(f"transform {t.name!r} is not a 2-D transform; ST models classify images")
    out_size, cls_size = st_sizes(size, st_downsample)
    in_features = in_channels * size[0] * size[1]
    sts = []
    for _ in range(branches):
        loc, feat = fcn_localization(in_features)
        sts.append(SpatialTransformer(loc, _transforms.get(transform), output_size=out_size, in_features=feat,
                                      bound=bound, loc_lr_scale=loc_lr_scale))
    branch_params = fcn_localization_params(in_features) + (feat + 1) * t.num_params
    cls_channels = branches * in_channels
    hidden = hidden or fcn_hidden(cls_channels * cls_size[0] * cls_size[1], num_classes,
                                   param_budget - branches * branch_params)
    classifier = FCN(cls_size, cls_channels, num_classes, hidden)
    return ParallelSTClassifier(ParallelSpatialTransformers(sts), classifier, avgpool=st_downsample == "avgpool")
