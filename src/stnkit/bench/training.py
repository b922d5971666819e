"""Training-step cost of the Table 1 models with and without their transformer, and the data-generation rate.

Training steps (batch 256 by default, SGD, cross-entropy: forward, backward, optimizer step) of every ST model of
Table 1 (ST-FCN / ST-CNN x affine / projective / TPS) on the paper's 42x42 canvases (R: no downsampling; RTS: the
transformer samples at half size), timed side by side with

* its baseline (ST-CNN vs CNN, ST-FCN vs FCN, same parameter budget, same input): the paper's comparison (its
  multi-transformer SVHN model was "only 6% slower"; target <= 1.10x);
* the same classifier without the transformer, on input of the transformer's output size: what localisation +
  grid + sampling cost;
* the parts of the transformer's overhead alone: the localisation net (``predict_params``, fwd+bwd), the warp
  (``warp`` with gradients to the parameters) and the classifier's input gradient (the classifier's step with and
  without a gradient to its input: behind a transformer its first layer must back-propagate into its input), to
  say which dominates;
* the same ST model on stnkit's reference paths (``warp_checked(..., fast=False)``: reference grid formulas and
  ``F.grid_sample``, differentiated by autograd), to show what the fast paths buy.

Data: distorted samples generated per second by ``stnkit.data.DistortedMNIST.get_batch`` (batch 256) for each
distortion, against the samples per second the matching ST-CNN consumes in training, on the same threads
(target >= 5x). Digits are random uint8 images: generation cost does not depend on their content.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from stnkit.bench.timing import interleaved
from stnkit.sampling import warp_checked

if TYPE_CHECKING:
    from stnkit.models.mnist import STClassifier
    from stnkit.modules import LocalizationHead

__all__ = ["DataResult", "StepResult", "run_data", "run_training"]

BATCH = 256


@dataclass
class StepResult:
    """Step times (ms) of one ST model and its comparisons."""

    model: str
    transform: str
    dataset: str
    st_ms: float
    baseline: str
    baseline_ms: float
    classifier_ms: float
    loc_ms: float
    warp_ms: float
    st_reference_ms: float
    classifier_dx_ms: float

    @property
    def vs_baseline(self) -> float:
        """ST step time / baseline step time (target <= 1.10)."""
        return self.st_ms / self.baseline_ms

    @property
    def vs_classifier(self) -> float:
        """ST step time / classifier-alone step time (the transformer's overhead)."""
        return self.st_ms / self.classifier_ms

    @property
    def input_grad_ms(self) -> float:
        """Extra classifier cost of back-propagating into its input, which the transformer makes necessary."""
        return max(self.classifier_dx_ms - self.classifier_ms, 0.0)

    @property
    def dominant(self) -> str:
        """The largest part of the transformer's overhead: localisation, warp or the classifier's input gradient."""
        parts = {"localisation": self.loc_ms, "warp": self.warp_ms, "classifier input grad": self.input_grad_ms}
        return max(parts, key=parts.__getitem__)


@dataclass
class DataResult:
    """Generation vs consumption rate (samples/s) of one distortion."""

    dataset: str
    canvas: int
    generate_per_s: float
    model: str
    consume_per_s: float

    @property
    def ratio(self) -> float:
        """Generated / consumed samples per second (target >= 5)."""
        return self.generate_per_s / self.consume_per_s


def available(package: str) -> bool:
    """Return whether a stnkit subpackage (``stnkit.models`` / ``stnkit.data``) exists in this checkout."""
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        return False


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        x.grad = None
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def _reference_step(model: STClassifier, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The training step of ``model`` (as ``STClassifier.forward``) with its warp on the reference path."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    st = model.transformer

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        size = st.output_size or tuple(x.shape[2:])
        warped = warp_checked(x, st.transform, st.predict_params(x), size, st.mode, st.padding_mode,
                              st.align_corners, fill_value=st.fill_value, antialias=st.antialias, fast=False)
        if model.avgpool:
            warped = F.avg_pool2d(warped, 2)
        F.cross_entropy(model.classifier(warped), y).backward()
        opt.step()
    return step


def run_training(
    kinds: tuple[str, ...], transforms: tuple[str, ...], datasets: tuple[str, ...], budget_s: float,
    log: Callable[[str], None] = print, batch: int = BATCH, min_reps: int = 5,
) -> list[StepResult]:
    """Time the training steps of the Table 1 models (see the module docstring)."""
    from stnkit.models import create

    gen = torch.Generator().manual_seed(0)
    results = []
    for dataset in datasets:
        size, downsample = 42, ("output_size" if dataset == "rts" else None)
        x = torch.rand(batch, 1, size, size, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        for kind in kinds:
            base_name = kind.removeprefix("st-")
            baseline = create(base_name, input_size=size)
            for transform in transforms:
                torch.manual_seed(0)
                # the Table 1 ST models (st-fcn, st-cnn) are STClassifiers
                model = cast("STClassifier", create(kind, input_size=size, transform=transform,
                                                    st_downsample=downsample))
                st = model.transformer
                head = cast("LocalizationHead", st.head)
                with torch.no_grad():  # a non-trivial warp: identity-initialised heads would sample the identity
                    head.bias.add_(0.05 * torch.randn(head.bias.shape, generator=gen))
                # (C, h, w) after the transformer (and its pooling): the classifier is an FCN or a CNN
                cls_shape = cast("tuple[int, int, int]", model.classifier.input_shape)
                cls_x = torch.rand(batch, *cls_shape, generator=gen)
                classifier = copy.deepcopy(model.classifier)  # the same classifier, without the transformer
                params = st.predict_params(x).detach().requires_grad_()

                def loc(st=st, x=x) -> None:
                    st.predict_params(x).sum().backward()

                def warp(st=st, x=x, params=params) -> None:
                    torch.autograd.grad(st.warp(x, params).sum(), params)

                st_step = _step(model, x, y)
                cls_dx = cls_x.clone().requires_grad_()  # as behind a transformer: the gradient reaches the input
                fns = {"st": st_step, "baseline": _step(baseline, x, y), "classifier": _step(classifier, cls_x, y),
                       "classifier_dx": _step(copy.deepcopy(classifier), cls_dx, y), "loc": loc, "warp": warp,
                       "st_reference": _reference_step(model, x, y)}
                ms = interleaved(fns, budget_s=budget_s, min_reps=min_reps, max_reps=20, warmup=1)
                r = StepResult(kind, transform, dataset, ms["st"], base_name, ms["baseline"], ms["classifier"],
                               ms["loc"], ms["warp"], ms["st_reference"], ms["classifier_dx"])
                log(f"  {kind:7s} {transform:10s} {dataset:4s} step {r.st_ms:8.2f} ms  {base_name} {r.baseline_ms:8.2f}"
                    f" ms (x{r.vs_baseline:.2f})  classifier alone {r.classifier_ms:8.2f} ms (x{r.vs_classifier:.2f})"
                    f"  loc {r.loc_ms:.2f} / warp {r.warp_ms:.2f} / input grad {r.input_grad_ms:.2f} ms  reference "
                    f"path step {r.st_reference_ms:.2f}")
                results.append(r)
    return results


def run_data(
    datasets: tuple[str, ...], budget_s: float, log: Callable[[str], None] = print, batch: int = BATCH,
    min_reps: int = 5,
) -> list[DataResult]:
    """Compare distorted-data generation with training consumption (see the module docstring)."""
    from stnkit.data import DistortedMNIST
    from stnkit.models import create

    gen = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 256, (4096, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (4096,), generator=gen)
    transform_of = {"p": "projective", "e": "tps"}
    results = []
    for dataset in datasets:
        ds = DistortedMNIST(digits, labels, dataset, fresh=True)
        canvas = int(ds.get_batch([0])[0].shape[-1])
        epoch = iter(range(10**9))

        def generate(ds: DistortedMNIST = ds, epoch=epoch) -> None:
            ds.set_epoch(next(epoch))  # fresh draws every batch, as a training epoch sees them
            ds.get_batch(torch.randint(0, len(digits), (batch,), generator=gen))

        transform = transform_of.get(dataset, "affine")
        downsample = "output_size" if dataset in ("rts", "tc") else None
        model = create("st-cnn", input_size=canvas, transform=transform, st_downsample=downsample)
        x = torch.rand(batch, 1, canvas, canvas, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        ms = interleaved({"generate": generate, "train": _step(model, x, y)}, budget_s=budget_s, min_reps=min_reps,
                         warmup=1)
        r = DataResult(dataset, canvas, batch / ms["generate"] * 1e3, f"st-cnn ({transform})",
                       batch / ms["train"] * 1e3)
        log(f"  {dataset:4s} {canvas}x{canvas}: generate {r.generate_per_s:9.0f}/s  train {r.model} "
            f"{r.consume_per_s:7.0f}/s  x{r.ratio:.1f}")
        results.append(r)
    return results
