"""Dense spatial transformers: a network predicts a displacement (or a velocity) and the input is warped by it.

The network's output convolution is zero-initialised, so at initialisation the field is zero and every input is
passed through unwarped (the identity-at-init rule of Jaderberg et al. 2015, applied to dense fields).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from stnkit.fields.algebra import compose_transform
from stnkit.fields.conventions import check_field_options
from stnkit.fields.warping import integrate, warp
from stnkit.modules import SpatialTransformer
from stnkit.sampling import check_options

__all__ = ["AffineDenseCascade", "DenseSpatialTransformer"]

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _net_input(moving: Tensor, fixed: Tensor | None) -> Tensor:
    if not isinstance(moving, Tensor):
        raise TypeError(f"moving must be a torch.Tensor; got {type(moving).__name__}")
    if fixed is None:
        return moving
    if not isinstance(fixed, Tensor) or fixed.ndim != moving.ndim or fixed.shape[0] != moving.shape[0]:
        got = tuple(fixed.shape) if isinstance(fixed, Tensor) else type(fixed).__name__
        raise ValueError(f"fixed must have the batch size and rank of moving {tuple(moving.shape)}; got {got}")
    return torch.cat([moving, fixed.to(moving.dtype)], dim=1)  # (N, C_moving + C_fixed, *spatial)


class DenseSpatialTransformer(nn.Module):
    """Warp the input by a dense field that ``net`` predicts from it (and from a fixed image, for registration).

    Args:
        net: any module mapping (N, C, *spatial) (moving and fixed concatenated along channels when a fixed image
            is given) to a field (N, d, *spatial_field) in the given convention: a displacement, or a stationary
            velocity with ``diffeomorphic=True``. Its last registered convolution (its output layer, as in
            ``nn.Sequential`` nets and VoxelMorph's U-Net + flow conv) is zero-initialised; anything after it must
            map 0 to 0.
        diffeomorphic: integrate the output as a velocity (:func:`stnkit.fields.integrate`).
        steps: scaling-and-squaring steps (VoxelMorph and MONAI use 7).
        units: convention of the net's output, ``"normalized"`` or ``"voxel"``.
        order: ``"xy"`` or ``"ij"``.
        mode: sampling kernel of the image warp.
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"``.
        align_corners: frame convention (default False, as torch).
        fill_value: padding colour of ``padding_mode="fill"``, a number or a tensor (C,) (kept as a buffer).

    Shapes:
        moving (N, C, *spatial) [, fixed (N, C', *spatial)] -> warped (N, C, *spatial_field).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
        >>> st = DenseSpatialTransformer(net, diffeomorphic=True)
        >>> moving, fixed = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
        >>> torch.equal(st(moving, fixed), moving)
        True
    """

    fill_value: float | Tensor | None

    def __init__(
        self,
        net: nn.Module,
        *,
        diffeomorphic: bool = False,
        steps: int = 7,
        units: str = "normalized",
        order: str = "xy",
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        fill_value: float | Tensor | None = None,
    ) -> None:
        super().__init__()
        check_field_options(units, order)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0; got {steps!r}")
        convs = [name for name, m in net.named_modules() if isinstance(m, _CONVS)]
        if not convs:
            raise ValueError(f"net must contain a convolution (its output layer, zero-initialised here); got "
                             f"{type(net).__name__} with none")
        self.net = net
        self.flow_name = convs[-1]
        self.diffeomorphic, self.steps = bool(diffeomorphic), steps
        self.units, self.order = units, order
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, bool(align_corners)
        if isinstance(fill_value, nn.Parameter):
            self.fill_value = fill_value
        elif isinstance(fill_value, Tensor):
            self.register_buffer("fill_value", fill_value.detach().clone(), persistent=False)
        else:
            self.fill_value = None if fill_value is None else float(fill_value)
        self.reset_parameters()

    def flow(self) -> nn.Module:
        """Return the net's output convolution (the one zero-initialised)."""
        return self.net.get_submodule(self.flow_name)

    def reset_parameters(self) -> None:
        """Zero the output convolution's weight and bias: the field is zero for every input."""
        conv = self.flow()
        weight, bias = conv.weight, conv.bias
        if not isinstance(weight, Tensor) or isinstance(weight, UninitializedParameter):
            raise ValueError(f"the output convolution {self.flow_name!r} of net is lazy; give it in_channels so it "
                             f"can be zero-initialised")
        with torch.no_grad():
            weight.zero_()
            if isinstance(bias, Tensor):
                bias.zero_()

    def predict_displacement(self, moving: Tensor, fixed: Tensor | None = None) -> Tensor:
        """Return the displacement (N, d, *spatial_field) in the layer's convention (integrated if diffeomorphic)."""
        field = self.net(_net_input(moving, fixed))  # (N, d, *spatial_field)
        if not self.diffeomorphic:
            return field
        return integrate(field, self.steps, units=self.units, order=self.order, align_corners=self.align_corners)

    def warp(self, moving: Tensor, displacement: Tensor) -> Tensor:
        """Warp ``moving`` (N, C, *spatial) by a displacement in the layer's convention."""
        return warp(moving, displacement, units=self.units, order=self.order, mode=self.mode,
                    padding_mode=self.padding_mode, align_corners=self.align_corners, fill_value=self.fill_value)

    def forward(
        self, moving: Tensor, fixed: Tensor | None = None, return_displacement: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Warp ``moving``; with ``return_displacement`` also return the field (for a smoothness loss)."""
        displacement = self.predict_displacement(moving, fixed)
        out = self.warp(moving, displacement)
        return (out, displacement) if return_displacement else out

    def extra_repr(self) -> str:
        return (f"flow={self.flow_name!r}, diffeomorphic={self.diffeomorphic}, steps={self.steps}, "
                f"units={self.units!r}, order={self.order!r}")


class AffineDenseCascade(nn.Module):
    """An affine (or any parametric) transformer followed by a dense one, sampling the input once.

    The parametric stage regresses ``params`` and warps the moving image for the dense stage's network only; the
    output is the moving image sampled once at ``T(p + d(p))`` (:func:`stnkit.fields.compose_transform`), so it
    is not blurred twice as ``warp(warp(x, params), d)`` is.

    Args:
        parametric: a :class:`~stnkit.SpatialTransformer` whose localisation net takes the dense stage's input
            (moving, or moving and fixed concatenated along channels).
        dense: a :class:`DenseSpatialTransformer` with the same ``align_corners``; its field must have the
            parametric stage's output size, and its sampling options are the cascade's.

    Shapes:
        moving (N, C, *spatial) [, fixed (N, C', *spatial_out)] -> warped (N, C, *spatial_field).

    Example:
        >>> loc = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16 * 16, 8), nn.ReLU())
        >>> net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
        >>> cascade = AffineDenseCascade(SpatialTransformer(loc, "affine"), DenseSpatialTransformer(net))
        >>> moving = torch.rand(2, 1, 16, 16)
        >>> torch.allclose(cascade(moving, torch.rand(2, 1, 16, 16)), moving, atol=1e-6)
        True
    """

    def __init__(self, parametric: SpatialTransformer, dense: DenseSpatialTransformer) -> None:
        super().__init__()
        if parametric.align_corners != dense.align_corners:
            raise ValueError(f"parametric and dense stages must share align_corners; got "
                             f"{parametric.align_corners} and {dense.align_corners}")
        check_options(dense.mode, dense.padding_mode, parametric.transform.spatial_dims)
        self.parametric = parametric
        self.dense = dense

    def forward(
        self, moving: Tensor, fixed: Tensor | None = None, return_parts: bool = False
    ) -> Tensor | tuple[Tensor, Tensor, Tensor, Tensor]:
        """Warp ``moving``; with ``return_parts`` also return ``(params, dense displacement, total displacement)``.

        The total displacement is in the dense stage's convention, counting voxels of ``moving``.
        """
        params = self.parametric.predict_params(_net_input(moving, fixed))  # (N, P)
        moved = self.parametric.warp(moving, params)  # (N, C, *spatial_out), the dense net's input only
        displacement = self.dense.predict_displacement(moved, fixed)  # (N, d, *spatial_field)
        total = compose_transform(params, displacement, self.parametric.transform, units=self.dense.units,
                                  order=self.dense.order, size=tuple(moving.shape[2:]),
                                  align_corners=self.dense.align_corners)
        out = self.dense.warp(moving, total)
        return (out, params, displacement, total) if return_parts else out
