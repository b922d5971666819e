"""The paper's SVHN speed claim, measured: ST-CNN Multi's training step against the CNN's on the same input.

Jaderberg et al. 2015 (Sec. 4.2): "the ST-CNN Multi model is only 6 % slower than the CNN". A training step is
forward, sequence loss, backward and an SGD step (momentum 0.9, localisation nets at a tenth of the rate), in
training mode (dropout on), on one random batch shared by all models; the models are timed side by side in
interleaved rounds (:func:`stnkit.bench.timing.interleaved`), so the ratio of medians holds on a loaded machine.
ST-CNN Single is timed alongside. Run ``python -m stnkit.bench.svhn [--width W --batch B --size S]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

from stnkit.bench.timing import interleaved, machine_info
from stnkit.losses import sequence_loss
from stnkit.models import create
from stnkit.models.svhn import SequenceLogits
from stnkit.modules import param_groups

__all__ = ["PAPER_RATIO", "SVHNStepResult", "main", "run_svhn_steps"]

#: ST-CNN Multi / CNN step time the paper reports ("only 6 % slower").
PAPER_RATIO = 1.06
MODELS = {"cnn": "svhn-cnn", "st-single": "svhn-st-single", "st-multi": "svhn-st-multi"}


@dataclass
class SVHNStepResult:
    """Median training-step times (ms) of the three SVHN models on one input shape."""

    width: float
    batch: int
    input_size: int
    in_channels: int
    cnn_ms: float
    st_single_ms: float
    st_multi_ms: float

    @property
    def multi_vs_cnn(self) -> float:
        """ST-CNN Multi step time / CNN step time (the paper: 1.06)."""
        return self.st_multi_ms / self.cnn_ms

    @property
    def single_vs_cnn(self) -> float:
        """ST-CNN Single step time / CNN step time."""
        return self.st_single_ms / self.cnn_ms

    def table(self) -> str:
        """Return the result as a small markdown table."""
        return "\n".join([
            f"SVHN training step, batch {self.batch}, {self.in_channels}x{self.input_size}x{self.input_size}, "
            f"width {self.width}:",
            "| model | ms / step | vs CNN |",
            "|---|---:|---:|",
            f"| CNN | {self.cnn_ms:.1f} | 1.00x |",
            f"| ST-CNN Single | {self.st_single_ms:.1f} | {self.single_vs_cnn:.2f}x |",
            f"| ST-CNN Multi | {self.st_multi_ms:.1f} | {self.multi_vs_cnn:.2f}x (paper {PAPER_RATIO:.2f}x) |",
        ])


def _step_fn(name: str, x: torch.Tensor, length: torch.Tensor, digits: torch.Tensor, width: float,
             lr: float = 0.01) -> Callable[[], None]:
    model = create(name, input_size=x.shape[-1], in_channels=x.shape[1], width=width).to(x.device).train()
    opt = torch.optim.SGD(param_groups(model, lr=lr), momentum=0.9)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def step() -> None:
        out = cast(SequenceLogits, model(x))
        loss = sequence_loss(out.length, out.digits, length, digits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()  # the timer measures finished work

    return step


def run_svhn_steps(width: float = 0.25, batch: int = 32, input_size: int = 64, in_channels: int = 3,
                   budget_s: float = 5.0, min_reps: int = 5, seed: int = 0, device: str = "cpu") -> SVHNStepResult:
    """Time the training steps of the CNN, ST-CNN Single and ST-CNN Multi side by side on one batch.

    Args:
        width: model width multiplier (1.0: the paper's 23M-parameter CNN).
        batch: images per step.
        input_size: S of the (batch, in_channels, S, S) input.
        in_channels: C.
        budget_s: seconds of interleaved timed rounds.
        min_reps: fewest timed rounds.
        seed: seed of the models' initialisation and the random batch.
        device: where the models and the batch live (the paper timed a GPU).

    Returns:
        An :class:`SVHNStepResult`.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, in_channels, input_size, input_size, generator=g)
    length = torch.randint(1, 6, (batch,), generator=g)
    digits = torch.where(torch.arange(5) < length[:, None], torch.randint(0, 10, (batch, 5), generator=g), 10)
    x, length, digits = x.to(device), length.to(device), digits.to(device)
    torch.manual_seed(seed)
    fns = {key: _step_fn(name, x, length, digits, width) for key, name in MODELS.items()}
    ms = interleaved(fns, budget_s=budget_s, min_reps=min_reps, max_reps=1000)
    return SVHNStepResult(width, batch, input_size, in_channels, ms["cnn"], ms["st-single"], ms["st-multi"])


def main(argv: list[str] | None = None) -> int:
    """Print the SVHN step-time comparison; returns the exit status (0)."""
    p = argparse.ArgumentParser(prog="python -m stnkit.bench.svhn", description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25, help="model width multiplier (1.0: the paper's)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="input side S")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--budget", type=float, default=5.0, help="seconds of timed rounds")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"torch {info['torch']}, {info['cpu']}")
    result = run_svhn_steps(args.width, args.batch, args.size, args.channels, args.budget, device=args.device)
    print(result.table())
    print(f"ST-CNN Multi / CNN = {result.multi_vs_cnn:.3f} (paper {PAPER_RATIO:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
