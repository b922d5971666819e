"""3-D MNIST models (Jaderberg et al. 2015, App. A.3): a 3-D transformer, a projection over depth, a 2-D classifier.

``st-cnn-mnist3d``: an ``"affine3d"`` spatial transformer resamples the (V, V, V) volume into a (D, H, W) output,
which is summed over depth (the volume "flattened" into a 2-D projection) and classified by the Table 1 CNN. The
transformer is trained with class labels only, so the projection it learns (an orientation, position and zoom of
the volume) is whatever makes the digit readable. ``cnn-mnist3d`` is the same network without the transformer:
the volume is resampled at the identity and projected along its fixed depth axis (the ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from stnkit._checks import check_tensor, normalize_size, shape_str
from stnkit.models._registry import register_model
from stnkit.models.mnist import CNN, DEFAULT_PARAM_BUDGET, cnn_channels
from stnkit.modules import SpatialTransformer
from stnkit.sampling import warp
from stnkit.transforms import Affine3D

__all__ = ["ProjectionClassifier", "volume_localization", "volume_localization_params"]

LOC_SIZE = 20  # the localisation net's input is average-pooled to about this side


def _loc_side(input_size: int) -> int:
    # average-pool -> conv 5 (valid) -> max-pool 2 -> conv 3 (valid) -> max-pool 2
    return ((input_size // max(1, input_size // LOC_SIZE) - 4) // 2 - 2) // 2


def volume_localization(
    input_size: int, in_channels: int = 1, channels: Sequence[int] = (8, 16), hidden: int = 32
) -> tuple[nn.Module, int]:
    """Build a 3-D localisation net: average-pool to ~20^3, conv 5^3 -> max-pool 2 -> conv 3^3 -> max-pool 2 -> FC.

    Args:
        input_size: V of the (V, V, V) input.
        in_channels: C.
        channels: filters of the two conv layers.
        hidden: units of the FC layer.

    Returns:
        The module mapping (N, C, V, V, V) to (N, hidden) and ``hidden``.

    Example:
        >>> import torch
        >>> net, f = volume_localization(60)
        >>> net(torch.rand(2, 1, 60, 60, 60)).shape, f
        (torch.Size([2, 32]), 32)
    """
    pool = max(1, input_size // LOC_SIZE)
    side = _loc_side(input_size)
    if side < 1:
        raise ValueError(f"the 3-D localisation net needs volumes of at least 14^3; got {input_size}")
    c1, c2 = channels
    net = nn.Sequential(
        nn.AvgPool3d(pool),  # (N, C, V/pool, ...) the orientation of a slab survives this blur
        nn.Conv3d(in_channels, c1, 5), nn.ReLU(inplace=True), nn.MaxPool3d(2),
        nn.Conv3d(c1, c2, 3), nn.ReLU(inplace=True), nn.MaxPool3d(2),
        nn.Flatten(),
        nn.Linear(c2 * side**3, hidden), nn.ReLU(inplace=True),  # (N, hidden)
    )
    return net, hidden


def volume_localization_params(input_size: int, in_channels: int = 1, channels: Sequence[int] = (8, 16),
                               hidden: int = 32) -> int:
    """Return the parameter count of :func:`volume_localization` (without the regression layer)."""
    side = _loc_side(input_size)
    c1, c2 = channels
    return (in_channels * 125 + 1) * c1 + (c1 * 27 + 1) * c2 + (c2 * side**3 + 1) * hidden


class ProjectionClassifier(nn.Module):
    """Volume -> (3-D spatial transformer, or identity resampling) -> sum over depth -> 2-D classifier.

    Args:
        classifier: 2-D network on the (N, C, H_out, W_out) projection.
        output_size: (D_out, H_out, W_out) the volume is resampled to before projecting.
        transformer: an ``"affine3d"`` :class:`~stnkit.SpatialTransformer` (its output size is ``output_size``), or
            None for the fixed projection along the input's depth axis.

    Shapes:
        (N, C, D, H, W) -> logits (N, num_classes).

    Example:
        >>> import torch
        >>> model = ProjectionClassifier(CNN(16, channels=(4, 8)), (8, 16, 16))
        >>> model(torch.rand(2, 1, 24, 24, 24)).shape
        torch.Size([2, 10])
    """

    identity: Tensor

    def __init__(self, classifier: nn.Module, output_size: int | Sequence[int],
                 transformer: SpatialTransformer | None = None) -> None:
        super().__init__()
        self.output_size = normalize_size(output_size, 3)
        if transformer is not None and transformer.transform.name != "affine3d":
            raise ValueError(f"the transformer must be 3-D ('affine3d'); got {transformer.transform.name!r}")
        self.transformer = transformer
        self.classifier = classifier
        self.register_buffer("identity", Affine3D().identity()[None], persistent=False)  # (1, 12)

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the resampled volume (N, C, D_out, H_out, W_out) and its parameters (N, 12)."""
        check_tensor(x, "input")
        if x.ndim != 5:
            raise ValueError(f"input must be volumes of shape (N, C, D, H, W); got {shape_str(x)}")
        if self.transformer is None:
            params = self.identity.expand(x.shape[0], -1).to(x.dtype)  # (N, 12)
            return warp(x, params, "affine3d", self.output_size), params
        return self.transformer(x, return_params=True)

    def project(self, x: Tensor) -> Tensor:
        """Return the 2-D projection (N, C, H_out, W_out) of volumes (N, C, D, H, W): resample, sum over depth."""
        return self.transform(x)[0].sum(dim=2)  # (N, C, H_out, W_out)

    def forward(self, x: Tensor) -> Tensor:
        """Classify volumes (N, C, D, H, W) into logits (N, num_classes)."""
        return self.classifier(self.project(x))


def _projection_model(transformer: bool, input_size: int | Sequence[int], in_channels: int, num_classes: int,
                      output_size: int | Sequence[int], param_budget: int, loc_lr_scale: float,
                      bound: float | None, channels: Sequence[int] | None) -> ProjectionClassifier:
    side = normalize_size(input_size, 3, "input_size")
    if len(set(side)) != 1:
        raise ValueError(f"3-D MNIST models take cubic volumes; got input_size {side}")
    out = normalize_size(output_size, 3)
    st = None
    budget = param_budget
    if transformer:
        loc, feat = volume_localization(side[0], in_channels)
        st = SpatialTransformer(loc, "affine3d", output_size=out, in_features=feat, bound=bound,
                                loc_lr_scale=loc_lr_scale)
        budget -= volume_localization_params(side[0], in_channels) + (feat + 1) * 12
    channels = channels or cnn_channels((in_channels, out[1], out[2]), num_classes, budget)
    return ProjectionClassifier(CNN(out[1:], in_channels, num_classes, channels), out, st)


@register_model("st-cnn-mnist3d")
def st_cnn_mnist3d(
    input_size: int | Sequence[int] = 60, in_channels: int = 1, num_classes: int = 10,
    output_size: int | Sequence[int] = 28, param_budget: int = DEFAULT_PARAM_BUDGET, loc_lr_scale: float = 1.0,
    bound: float | None = None, channels: Sequence[int] | None = None,
) -> ProjectionClassifier:
    """3-D affine transformer -> projection over depth -> CNN; widths solved for ``param_budget``.

    Args:
        input_size: V of the (V, V, V) input volumes.
        in_channels: C.
        num_classes: logits.
        output_size: (D_out, H_out, W_out) of the transformer's output (an int for a cube).
        param_budget: total parameters (the CNN's widths take what the localisation net leaves).
        loc_lr_scale: learning-rate multiplier of the localisation net.
        bound: optional bound of the parameters around the identity.
        channels: the CNN's two conv widths instead of solving them.
    """
    return _projection_model(True, input_size, in_channels, num_classes, output_size, param_budget, loc_lr_scale,
                             bound, channels)


@register_model("cnn-mnist3d")
def cnn_mnist3d(
    input_size: int | Sequence[int] = 60, in_channels: int = 1, num_classes: int = 10,
    output_size: int | Sequence[int] = 28, param_budget: int = DEFAULT_PARAM_BUDGET,
    channels: Sequence[int] | None = None,
) -> ProjectionClassifier:
    """The baseline without a transformer: fixed projection along depth -> CNN (same budget as the ST model).

    Args:
        input_size: V of the (V, V, V) input volumes.
        in_channels: C.
        num_classes: logits.
        output_size: (D_out, H_out, W_out) the volume is resampled to.
        param_budget: parameters the CNN's widths are solved for.
        channels: the CNN's two conv widths instead of solving them.
    """
    return _projection_model(False, input_size, in_channels, num_classes, output_size, param_budget, 1.0, None,
                             channels)
