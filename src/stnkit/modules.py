"""``nn.Module`` wrappers: the spatial transformer layer and its parallel and serial combinations.

A :class:`SpatialTransformer` = localisation net -> :class:`LocalizationHead` (regression to the transform's
parameters, identity-initialised) -> grid generator -> sampler (Jaderberg et al. 2015, Fig. 2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from stnkit import transforms as _transforms
from stnkit._checks import (
    check_batch,
    check_choice,
    check_float,
    check_same_device,
    check_tensor,
    normalize_size,
    shape_str,
)
from stnkit.sampling import check_options, warp_checked
from stnkit.transforms.base import MatrixTransform, Transform, no_autocast

__all__ = [
    "LocalizationHead",
    "ParallelSpatialTransformers",
    "SerialSpatialTransformers",
    "SpatialTransformer",
    "param_groups",
]


class LocalizationHead(LazyModuleMixin, nn.Module):
    """Final regression layer of a localisation net: features (N, F) -> parameters (N, P).

    Initialised to zero weights and the transform's identity as bias, so at initialisation every input is mapped
    to the identity transform (Jaderberg et al. 2015). With ``in_features=None`` F is inferred on the first call.
    Under autocast the regression runs in float32 (features cast up), so the parameters are not quantised to
    bfloat16/float16 (a bfloat16 theta moves a warp's output by up to 5e-2).

    Args:
        identity: identity parameters of the transform, shape (P,).
        in_features: F, or None to infer it lazily.
        bound: if set, parameters are ``identity + bound * tanh((z - identity) / bound)`` for the linear output
            ``z``: they stay within ``bound`` of the identity, and equal the identity at initialisation.

    Example:
        >>> head = LocalizationHead(torch.tensor([1.0, 0.0, 0.0]), in_features=20)
        >>> head(torch.rand(4, 20))[0]
        tensor([1., 0., 0.], grad_fn=<SelectBackward0>)
    """

    cls_to_become = None
    weight: nn.Parameter | UninitializedParameter
    bias: nn.Parameter
    identity: Tensor

    def __init__(self, identity: Tensor, in_features: int | None = None, bound: float | None = None) -> None:
        super().__init__()
        if bound is not None and bound <= 0:
            raise ValueError(f"bound must be positive or None; got {bound}")
        p = identity.numel()
        self.bound = bound
        self.register_buffer("identity", identity.detach().reshape(p).clone().float(), persistent=False)
        self.weight = UninitializedParameter() if in_features is None else nn.Parameter(torch.empty(p, in_features))
        self.bias = nn.Parameter(torch.empty(p))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero weights and identity bias: the head outputs the identity transform for any input."""
        with torch.no_grad():
            if not self.has_uninitialized_params():
                self.weight.zero_()
            self.bias.copy_(self.identity)

    def initialize_parameters(self, features: Tensor) -> None:  # called by LazyModuleMixin on the first forward
        if self.has_uninitialized_params():
            # ordinary tensors even on a first call under torch.inference_mode(), so the head can be trained later
            with torch.inference_mode(False), torch.no_grad():
                cast(UninitializedParameter, self.weight).materialize((self.identity.numel(), features.shape[-1]))
                self.reset_parameters()

    def regress(self, features: Tensor) -> Tensor:
        """Return the linear output (N, P) of features (N, F), in the weights' dtype also under autocast."""
        with no_autocast(features.device):
            return F.linear(features.to(self.weight.dtype), self.weight, self.bias)  # (N, P)

    def forward(self, features: Tensor) -> Tensor:
        """Regress parameters (N, P) from features (N, F)."""
        z = self.regress(features)  # (N, P)
        if self.bound is None:
            return z
        ident = self.identity.to(z.dtype)
        return ident + self.bound * torch.tanh((z - ident) / self.bound)

    def extra_repr(self) -> str:
        f = "lazy" if self.has_uninitialized_params() else self.weight.shape[1]
        return f"in_features={f}, num_params={self.identity.numel()}, bound={self.bound}"


class SpatialTransformer(nn.Module):
    """Spatial transformer layer: warps its input by a transform regressed from the input itself.

    Args:
        localization: any module mapping the input (N, C, H, W) (or a 5-D volume) to features (N, F) (higher-rank
            outputs are flattened). The regression layer to the transform's parameters is added here (unless
            ``head`` is given).
        transform: transform name (see :func:`stnkit.transforms.get`) or instance.
        output_size: (H_out, W_out) (3-D: (D_out, H_out, W_out)), an int for square, or None for the input size.
        in_features: F; None infers it on the first forward pass.
        bound: optional bound of the parameters around the identity (tanh); guards against collapse.
        loc_lr_scale: multiplier of the learning rate for the localisation net and head, used by
            :func:`param_groups` (the paper's models train better with a lower localisation rate).
        head: a module mapping the flattened features (N, F) to the parameters (N, P), replacing the
            identity-initialised :class:`LocalizationHead` (e.g.
            :class:`~stnkit.models.localization.SoftArgmaxWindowHead`); ``in_features`` and ``bound`` are then
            the head's own business and must be left unset.
        mode: sampling kernel ``"bilinear"`` | ``"nearest"`` | ``"bicubic"``.
        padding_mode: ``"zeros"`` | ``"border"`` | ``"reflection"`` | ``"fill"``. With normalised inputs zero is
            the mean colour, not the background, so zero padding shows a zoomed-out transformer grey borders
            (pytorch/tutorials#1117); ``"fill"`` pads with ``fill_value`` (e.g. the normalised background).
        align_corners: frame convention (default False, as torch).
        fill_value: the padding colour of ``padding_mode="fill"``: a number or a tensor (C,) per channel (kept as
            a buffer; an ``nn.Parameter`` is learnt).
        antialias: average each output pixel's footprint when the warp downsamples (see :func:`stnkit.warp`).

    Shapes:
        input (N, C, H, W) -> output (N, C, H_out, W_out); with ``Affine3D``, (N, C, D, H, W) -> (N, C, D_out, H_out,
        W_out). Parameters map output points to source points in the normalised frame.

    Example:
        >>> loc = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU())
        >>> st = SpatialTransformer(loc, "affine", output_size=(14, 14))
        >>> st(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 14, 14])
    """

    transform: Transform
    head: nn.Module  # a LocalizationHead unless replaced (any module mapping (N, F) features to (N, P) parameters)

    def __init__(
        self,
        localization: nn.Module,
        transform: str | Transform = "affine",
        output_size: int | Sequence[int] | None = None,
        *,
        in_features: int | None = None,
        bound: float | None = None,
        loc_lr_scale: float = 1.0,
        head: nn.Module | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        fill_value: float | Tensor | None = None,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        self.transform = _transforms.get(transform)
        d = self.transform.spatial_dims
        check_options(mode, padding_mode, d, fill_value)
        if loc_lr_scale < 0:
            raise ValueError(f"loc_lr_scale must be >= 0; got {loc_lr_scale}")
        if head is not None and (in_features is not None or bound is not None):
            raise ValueError("in_features and bound configure the default LocalizationHead; leave them unset when "
                             "passing head=")
        self.localization = localization
        self.head = LocalizationHead(self.transform.identity(), in_features, bound) if head is None else head
        self.output_size = None if output_size is None else normalize_size(output_size, d)
        self.loc_lr_scale = float(loc_lr_scale)
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, bool(align_corners)
        self.antialias = bool(antialias)
        self.fill_value: float | Tensor | None
        if isinstance(fill_value, nn.Parameter):
            self.fill_value = fill_value
        elif isinstance(fill_value, Tensor):
            self.register_buffer("fill_value", fill_value.detach().clone(), persistent=False)
        else:
            self.fill_value = None if fill_value is None else float(fill_value)

    def predict_params(self, x: Tensor) -> Tensor:
        """Return the transformation parameters (N, P) the localisation net regresses from ``x``."""
        features = self.localization(x)
        return self.head(features.flatten(1))  # (N, P)

    def warp(self, x: Tensor, params: Tensor, output_size: int | Sequence[int] | None = None) -> Tensor:
        """Warp ``x`` (N, C, *spatial) with given parameters (N, P) (or (1, P) for all) at ``output_size``.

        ``output_size`` defaults to the layer's, then to the input's size; it is validated as in :func:`stnkit.warp`.
        """
        size = None if output_size is None else normalize_size(output_size, self.transform.spatial_dims)
        self._check_input(x)
        params = self.transform.check_params(params)
        if params.shape[0] == 1 and x.shape[0] != 1:
            params = params.expand(x.shape[0], -1)  # one transform for every input
        check_batch(x, params, "input", "params")
        check_same_device(x, params, "input", "params")
        return self._warp(x, params, size)

    def _warp(self, x: Tensor, params: Tensor, size: tuple[int, ...] | None) -> Tensor:
        size = size or self.output_size or tuple(x.shape[2:])  # self.output_size was validated at construction
        return warp_checked(x, self.transform, params, size, self.mode, self.padding_mode, self.align_corners,
                            fill_value=self.fill_value, antialias=self.antialias)

    def forward(self, x: Tensor, return_params: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Warp ``x`` by the transform the localisation net predicts from it.

        Args:
            x: input (N, C, H, W), or (N, C, D, H, W) for 3-D transforms.
            return_params: also return the parameters (N, P).

        Returns:
            The warped output (N, C, H_out, W_out), and the parameters if ``return_params``.
        """
        self._check_input(x)
        params = self.predict_params(x)
        out = self._warp(x, params, None)
        return (out, params) if return_params else out

    def _check_input(self, x: Tensor) -> None:
        check_tensor(x, "input")
        check_float(x, "input")
        d = self.transform.spatial_dims
        if x.ndim != d + 2:
            layout = "(N, C, H, W)" if d == 2 else "(N, C, D, H, W)"
            raise ValueError(f"input of a SpatialTransformer with transform={self.transform.name!r} must have shape "
                             f"{layout}; got {shape_str(x)}")

    def localization_parameters(self) -> Iterator[nn.Parameter]:
        """Yield the parameters of the localisation net and regression head."""
        yield from self.localization.parameters()
        yield from self.head.parameters()

    def extra_repr(self) -> str:
        fill = "" if self.padding_mode != "fill" else f", fill_value={self.fill_value}"
        return (f"output_size={self.output_size}, loc_lr_scale={self.loc_lr_scale}, mode={self.mode!r}, "
                f"padding_mode={self.padding_mode!r}{fill}, align_corners={self.align_corners}, "
                f"antialias={self.antialias}")


class ParallelSpatialTransformers(nn.Module):
    """Several spatial transformers applied to the same input (the paper's CUB and MNIST-addition models).

    Args:
        transformers: the branches; for ``merge="concat"`` their output sizes must agree.
        merge: ``"concat"`` concatenates the outputs on channels, (N, k*C, H_out, W_out); ``"list"`` returns them
            as a list.

    Example:
        >>> mk = lambda: SpatialTransformer(nn.Flatten(), "attention", output_size=8)
        >>> ParallelSpatialTransformers([mk(), mk()])(torch.rand(2, 2, 16, 16)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, transformers: Sequence[SpatialTransformer], merge: str = "concat") -> None:
        super().__init__()
        check_choice(merge, ("concat", "list"), "merge")
        if len(transformers) == 0:
            raise ValueError("ParallelSpatialTransformers needs at least one transformer")
        self.branches = nn.ModuleList(transformers)
        self.merge = merge

    def forward(self, x: Tensor, return_params: bool = False):
        """Apply every branch to ``x`` (N, C, H, W); returns the merged outputs (and the list of params)."""
        outs, params = [], []
        for st in self.branches:
            out, p = st(x, return_params=True)
            outs.append(out)
            params.append(p)
        merged = torch.cat(outs, dim=1) if self.merge == "concat" else outs  # (N, k*C, H_out, W_out) or list
        return (merged, params) if return_params else merged


class SerialSpatialTransformers(nn.Module):
    """Spatial transformers in series; matrix transforms are composed so the input is sampled only once.

    Each stage's localisation net sees the previous stage's output. With ``compose=True`` (and only matrix
    transforms: affine families, projective, 3-D affine) stage k's output is sampled directly from the original
    input with the product ``A_1 @ ... @ A_k`` of the stages' matrices, instead of resampling the resampled
    output (which blurs twice); the final output is sampled once at the last stage's ``output_size``.

    Args:
        transformers: the stages, first applied first.
        compose: merge matrix transforms into one sampling (falls back to sequential warps for TPS stages).

    Example:
        >>> mk = lambda: SpatialTransformer(nn.Flatten(), "affine")
        >>> SerialSpatialTransformers([mk(), mk()])(torch.rand(2, 1, 12, 12)).shape
        torch.Size([2, 1, 12, 12])
    """

    composed: MatrixTransform

    def __init__(self, transformers: Sequence[SpatialTransformer], compose: bool = True) -> None:
        super().__init__()
        if len(transformers) == 0:
            raise ValueError("SerialSpatialTransformers needs at least one transformer")
        self.stages = nn.ModuleList(transformers)
        dims = {st.transform.spatial_dims for st in transformers}
        if len(dims) != 1:
            raise ValueError("all stages of SerialSpatialTransformers must have the same number of spatial dims")
        matrix = all(isinstance(st.transform, MatrixTransform) for st in transformers)
        self.compose = bool(compose) and matrix
        if self.compose:
            projective = any(st.transform.name == "projective" for st in transformers)
            name = "affine3d" if dims == {3} else ("projective" if projective else "affine")
            self.composed = cast(MatrixTransform, _transforms.get(name))  # family of the product A_1 @ ... @ A_k

    def forward(self, x: Tensor, return_params: bool = False):
        """Apply the stages to ``x``; returns the output (and the list of per-stage params)."""
        params: list[Tensor] = []
        if not self.compose:
            out = x
            for st in self.stages:  # each stage validates its own input
                out, p = st(out, return_params=True)
                params.append(p)
            return (out, params) if return_params else out
        stages: list[SpatialTransformer] = list(self.stages)  # type: ignore[arg-type]
        stages[0]._check_input(x)
        cur, total, size = x, None, tuple(x.shape[2:])
        for st in stages:
            p = st.predict_params(cur)
            params.append(p)
            m = cast(MatrixTransform, st.transform).to_matrix(p)  # (N, d+1, d+1): stage input <- stage output
            total = m if total is None else total @ m  # input <- this stage's output
            size = st.output_size or size
            cur = warp_checked(x, self.composed, self.composed.from_matrix(total), size, st.mode, st.padding_mode,
                               st.align_corners, fill_value=st.fill_value, antialias=st.antialias)  # always from x
        return (cur, params) if return_params else cur


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Split a model's parameters into optimizer groups with each transformer's localisation lr scaled.

    Args:
        model: any module containing :class:`SpatialTransformer` layers.
        lr: base learning rate.
        weight_decay: applied to every group.

    Returns:
        A list of dicts for a ``torch.optim`` optimizer: the rest of the model at ``lr``, then one group per
        transformer with ``lr * loc_lr_scale`` (omitted when empty).

    Example:
        >>> st = SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), loc_lr_scale=0.1, in_features=4)
        >>> [g["lr"] for g in param_groups(nn.Sequential(st, nn.Flatten(), nn.Linear(16, 2)), lr=0.01)]
        [0.01, 0.001]
    """
    seen: set[int] = set()
    groups = []
    for module in model.modules():
        if isinstance(module, SpatialTransformer):
            ps = [p for p in module.localization_parameters() if id(p) not in seen]
            seen.update(id(p) for p in ps)
            if ps:
                groups.append({"params": ps, "lr": lr * module.loc_lr_scale, "weight_decay": weight_decay})
    rest = [p for p in model.parameters() if id(p) not in seen]
    return [{"params": rest, "lr": lr, "weight_decay": weight_decay}, *groups]
