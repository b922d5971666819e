"""``stnkit summary``: parameter counts of the paper's four models side by side, or one model's layer table."""

from __future__ import annotations

import argparse

from stnkit.commands._common import print_metrics_table

NAME = "summary"
HELP = "print parameter counts of FCN/CNN/ST-FCN/ST-CNN for a dataset, or one model's layers"
ORDER = 40

_SIZES = {"plain": 28, "r": 42, "rts": 42, "p": 42, "e": 42, "tc": 60}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    p.add_argument("--dataset", default="rts", help=f"one of {', '.join(_SIZES)} (sets the input size)")
    p.add_argument("--model", help="show this model's layers instead of the side-by-side counts")
    p.add_argument("--transform", default="affine", help="transform of the ST models (default affine)")
    p.add_argument("--recipe", default="cpu", help="recipe whose ST downsampling applies (RTS, TC)")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from stnkit.models import count_params, create, summary
    from stnkit.training import TrainConfig

    if args.dataset not in _SIZES:
        raise ValueError(f"unknown dataset {args.dataset!r}; expected one of {', '.join(_SIZES)}")
    size = _SIZES[args.dataset]

    def build(model: str, transform: str):
        config = TrainConfig(dataset=args.dataset, model=model, transform=transform, recipe=args.recipe)
        down = config.st_downsample_for_model()
        kw = {"transform": transform, "st_downsample": None if down == "none" else down} if model.startswith("st-") \
            else {}
        return create(model, input_size=size, **kw)

    if args.model:
        print(summary(build(args.model, args.transform), (1, 1, size, size)))
        return 0
    rows = [{"model": m.upper(), "params": count_params(build(m, "affine"))} for m in ("fcn", "cnn")]
    for m in ("st-fcn", "st-cnn"):
        for t in ("affine", "projective", "tps"):
            rows.append({"model": f"{m.upper()} {t}", "params": count_params(build(m, t))})
    print(f"{args.dataset.upper()} ({size}x{size} inputs), parameters:")
    print_metrics_table(rows, [("model", "model"), ("params", "parameters")])
    return 0
