"""Registration losses: smoothness regularisers of a field and image similarity, 2-D and 3-D.

``gradient_loss`` is VoxelMorph's ``Grad("l2")`` (forward differences, mean per axis, averaged over the axes),
``bending_energy`` MONAI's ``BendingEnergyLoss`` (compact second differences on the interior), ``lncc`` the
windowed squared correlation of VoxelMorph and MONAI (negated, so lower is better). Differences are per grid
step, in the field's own units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bending_energy", "gradient_loss", "lncc", "mse", "normalized_mse"]

_PENALTIES = ("l2", "l1")


def _check_volume(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype; got {x.dtype}")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must have shape (N, C, H, W) or (N, C, D, H, W); got {tuple(x.shape)}")
    return x


def _check_pair(input: Tensor, target: Tensor) -> None:
    _check_volume(input, "input")
    _check_volume(target, "target")
    if input.shape != target.shape:
        raise ValueError(f"input and target must have the same shape; got {tuple(input.shape)} and "
                         f"{tuple(target.shape)}")


def gradient_loss(displacement: Tensor, penalty: str = "l2") -> Tensor:
    """Return the diffusion regulariser: the mean squared (or absolute) forward difference, averaged over axes.

    ``sum_k mean(|d[.., i_k + 1, ..] - d[.., i_k, ..]|^p) / ndim`` (VoxelMorph's ``Grad``): zero exactly for a
    constant field (a translation), with no checkerboard blind spot as central differences have.

    Args:
        displacement: field (or image) (N, C, H, W) or (N, C, D, H, W).
        penalty: ``"l2"`` (squared differences) or ``"l1"``.

    Returns:
        Scalar loss.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 2, 3, 4)
        >>> gradient_loss(x)
        tensor(0.5000)
    """
    _check_volume(displacement, "displacement")
    if penalty not in _PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; expected one of {', '.join(map(repr, _PENALTIES))}")
    d = displacement.ndim - 2
    total = displacement.new_zeros(())
    for axis in range(2, d + 2):
        diff = displacement.diff(dim=axis)  # (N, C, .., n_axis - 1, ..)
        total = total + (diff.square() if penalty == "l2" else diff.abs()).mean()
    return total / d


def _shifted(x: Tensor, offsets: dict[int, int]) -> Tensor:
    idx = [slice(None), slice(None)] + [slice(1, n - 1) for n in x.shape[2:]]  # the interior
    for axis, o in offsets.items():
        idx[axis] = slice(1 + o, x.shape[axis] - 1 + o)
    return x[tuple(idx)]  # (N, C, n_1 - 2, ..)


def _second_difference(x: Tensor, a: int, b: int) -> Tensor:
    if a == b:
        return _shifted(x, {a: 1}) - 2 * _shifted(x, {}) + _shifted(x, {a: -1})
    return (_shifted(x, {a: 1, b: 1}) - _shifted(x, {a: 1, b: -1}) - _shifted(x, {a: -1, b: 1})
            + _shifted(x, {a: -1, b: -1})) / 4


def bending_energy(displacement: Tensor) -> Tensor:
    """Return the bending energy: the mean over the interior of ``sum_ab (d^2 u / dx_a dx_b)^2``.

    Pure second derivatives use the ``[1, -2, 1]`` stencil, mixed ones the compact 4-point stencil, each counted
    twice (MONAI's ``BendingEnergyLoss(normalize=False)``); zero for every affine field.

    Args:
        displacement: field (N, C, H, W) or (N, C, D, H, W), every spatial size >= 3.

    Returns:
        Scalar loss.

    Raises:
        ValueError: a spatial size below 3.

    Example:
        >>> import torch
        >>> x = torch.arange(5.0).square().reshape(1, 1, 1, 5).expand(1, 2, 4, 5)
        >>> bending_energy(x)
        tensor(4.)
    """
    _check_volume(displacement, "displacement")
    if min(displacement.shape[2:]) < 3:
        raise ValueError(f"bending_energy needs every spatial size >= 3; got displacement "
                         f"{tuple(displacement.shape)}")
    axes = range(2, displacement.ndim)
    energy = displacement.new_zeros(())
    for a in axes:
        energy = energy + _second_difference(displacement, a, a).square()
        for b in range(a + 1, displacement.ndim):
            energy = energy + 2 * _second_difference(displacement, a, b).square()
    return energy.mean()


def mse(input: Tensor, target: Tensor) -> Tensor:
    """Return the mean squared difference of two images or volumes of the same shape.

    Example:
        >>> import torch
        >>> mse(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor(1.)
    """
    _check_pair(input, target)
    return (input - target).square().mean()


def normalized_mse(input: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Return the MSE of the two images after dividing each by its own root mean square, averaged over samples.

    Per sample ``mean((a / rms(a) - b / rms(b))^2) = 2 - 2 cos(a, b)``: unlike :func:`mse` it does
    not fall when the warp moves the content out of the volume or shrinks it (which lowers ``|a|^2``), only when the
    overlap grows. ``eps`` keeps an empty image finite (it then scores 1).

    Args:
        input: warped images (N, C, *spatial).
        target: fixed images, the same shape.
        eps: added to each mean square.

    Returns:
        Scalar loss in [0, 4].

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 4, 4)
        >>> float(normalized_mse(x, 3 * x)) < 1e-6
        True
    """
    _check_pair(input, target)
    a, b = input.flatten(1), target.flatten(1)  # (N, P)
    a = a / (a.square().mean(1, keepdim=True) + eps).sqrt()
    b = b / (b.square().mean(1, keepdim=True) + eps).sqrt()
    return (a - b).square().mean()


def lncc(input: Tensor, target: Tensor, window: int = 9, eps: float = 1e-5) -> Tensor:
    """Return the negative local normalised cross-correlation (lower is better, -1 for a perfect match).

    In every ``window``-wide box (zero padded at the borders, each channel apart) the squared correlation
    ``cross^2 / (var_input * var_target + eps)`` of the box sums (VoxelMorph's ``NCC``); the loss is minus its
    mean. It is invariant to a local affine change of intensity, unlike :func:`mse`.

    Args:
        input: warped images (N, C, H, W) or volumes (N, C, D, H, W).
        target: fixed images of the same shape.
        window: odd box width, in pixels.
        eps: added to the denominator (flat boxes score 0).

    Returns:
        Scalar loss in [-1, 0].

    Raises:
        ValueError: different shapes or an even/non-positive window.

    Example:
        >>> import torch
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool(lncc(x, 3 * x) < -0.999)
        True
    """
    _check_pair(input, target)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive int; got {window!r}")
    d = input.ndim - 2
    conv = F.conv2d if d == 2 else F.conv3d
    c = input.shape[1]
    box = torch.ones(c, 1, *([window] * d), dtype=input.dtype, device=input.device)  # (C, 1, *window)
    n = float(window**d)

    def box_sum(x: Tensor) -> Tensor:
        return conv(x, box, padding=window // 2, groups=c)  # (N, C, *spatial), zero padded

    s_i, s_t = box_sum(input), box_sum(target)
    s_ii, s_tt, s_it = box_sum(input * input), box_sum(target * target), box_sum(input * target)
    cross = s_it - s_i * s_t / n
    var_i = s_ii - s_i * s_i / n
    var_t = s_tt - s_t * s_t / n
    return -(cross.square() / (var_i * var_t + eps)).mean()

