"""``stnkit train``: train one model on one distorted-MNIST variant (the programmatic twin is ``training.fit``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from stnkit.commands._common import add_hardware_args, devices, progress_default

NAME = "train"
HELP = "train a model on distorted MNIST and write a run directory"
ORDER = 10
DESCRIPTION = (
    "Train FCN/CNN/ST-FCN/ST-CNN on a distorted-MNIST variant. The recipe (--recipe/--budget) sets optimiser, "
    "schedule, batch size and steps; single flags override it. Writes config.json, logs/metrics.csv, "
    "checkpoints/{last,best}.ckpt and metrics.json into the run directory."
)

_HW = ("accelerator", "num_nodes", "strategy", "precision", "threads")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser."""
    from stnkit.models import list_models
    from stnkit.training import DATASETS, RECIPES

    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default rts)")
    p.add_argument("--model", help=f"one of {', '.join(list_models())} (default st-cnn)")
    p.add_argument("--transform",
                   help="ST models: affine, projective, tps, attention, similarity, translation (default affine)")
    p.add_argument("--recipe", "--budget", dest="recipe", help=f"training recipe: {', '.join(RECIPES)} (default cpu)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, help="optimiser steps (default: the recipe's)")
    steps.add_argument("--epochs", type=int, help="epochs over the training set instead of --steps")
    g = p.add_argument_group("recipe overrides")
    g.add_argument("--batch-size", type=int, help="training batch size (default: the recipe's)")
    g.add_argument("--optimizer", help="sgd, adam, adamw (default: the recipe's)")
    g.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default: the recipe's)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default: the recipe's)")
    g.add_argument("--scheduler", help="none, step, cosine, onecycle (default: the recipe's)")
    g.add_argument("--loc-lr-scale", type=float, help="learning-rate multiplier of the localisation net")
    g.add_argument("--eval-every", type=int, help="steps between validations/checkpoints")
    g.add_argument("--st-downsample", help="output_size or avgpool (ST models on RTS/TC)")
    g.add_argument("--bound", type=float,
                   help="ST models: keep the transform's parameters within this tanh bound of the identity (guards "
                        "against a diverging localisation net; default unbounded, as in the paper)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last convolutions (default: the recipe's)")
    d = p.add_argument_group("data and output")
    d.add_argument("--seed", type=int, help="seed of weights, split, order and distortions (default 0)")
    d.add_argument("--data-dir",
                   help="folder with MNIST's IDX files (default $STNKIT_DATA, then ~/.cache/stnkit/mnist)")
    d.add_argument("--out", help="run directory (default runs/<dataset>-<model>[-<transform>]-<recipe>-s<seed>)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    d.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    d.add_argument("--val-size", type=int, help="training images held out for validation (default 5000)")
    d.add_argument("--train-subset", type=int, help="train on this many images only (default all)")
    d.add_argument("--val-subset", type=int, help="validate on this many images only (default all)")
    d.add_argument("--test-subset", type=int, help="test on this many images only (default all 10,000)")
    d.add_argument("--num-workers", type=int, help="DataLoader workers (default 0)")
    d.add_argument("--param-budget", type=int, help="parameter budget of the model widths (default 150000)")
    d.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="one line per validation instead of progress bars (default: bars on a terminal)")
    d.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    add_hardware_args(p)


# flags whose default the command fills in, so that --resume can tell a flag given from a flag left alone
_DEFAULTS: dict[str, Any] = {"dataset": "rts", "model": "st-cnn", "transform": "affine", "recipe": "cpu",
                             "seed": 0, "val_size": 5000, "num_workers": 0}
# what a run trains (fixed once it started) vs where and how it runs (may change on --resume)
_WHAT = ("dataset", "model", "transform", "recipe", "epochs", "batch_size", "optimizer", "lr", "momentum",
         "weight_decay", "scheduler", "loc_lr_scale", "eval_every", "st_downsample", "channels_last", "seed",
         "val_size", "train_subset", "val_subset", "test_subset", "param_budget", "model_kwargs")


def config_from_args(args: argparse.Namespace):
    """Build the :class:`TrainConfig` of parsed ``train`` arguments (from the run's config.json on --resume).

    On ``--resume`` a flag that changes what the run trains (model, data, recipe values, seed, ...) and differs
    from the run's recorded value is refused with one line listing each conflict; where and how it runs
    (hardware, threads, data folder, progress) and ``--steps`` (constant schedules only) may change.
    """
    from stnkit.models import list_models
    from stnkit.training import TrainConfig

    given = {k: getattr(args, k) for k in (
        "dataset", "model", "transform", "recipe", "steps", "epochs", "batch_size", "optimizer", "lr", "momentum",
        "weight_decay", "scheduler", "loc_lr_scale", "eval_every", "st_downsample", "channels_last", "seed",
        "data_dir", "out", "val_size", "train_subset", "val_subset", "test_subset", "num_workers", *_HW)}
    if args.param_budget is not None:
        given["param_budget"] = args.param_budget
    if args.bound is not None:
        if args.bound <= 0:
            raise ValueError(f"--bound must be positive; got {args.bound}")
        if not str(args.model or _DEFAULTS["model"]).lower().startswith("st-"):
            raise ValueError(f"--bound applies to ST models; {args.model!r} has no spatial transformer")
        given["model_kwargs"] = {"bound": args.bound}
    kw = {**given, **{k: v for k, v in _DEFAULTS.items() if given.get(k) is None}}
    if kw["model"].lower() not in list_models():
        raise ValueError(f"unknown model {kw['model']!r}; known models: {', '.join(list_models())}")
    from stnkit import transforms

    transforms.get(kw["transform"])  # unknown names fail here, with the list of known ones
    kw["devices"] = devices(args.devices)
    kw["progress"] = progress_default() if args.progress is None else args.progress
    config = TrainConfig(**kw)
    if not args.resume:
        config.resolved_recipe()  # validate recipe values now
        return config
    saved = config.run_dir() / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"nothing to resume: {saved} does not exist")
    resumed = TrainConfig.load(saved)
    recipe = resumed.resolved_recipe()  # the values the run trains with: its recipe's unless overridden

    def recorded(k: str):
        return getattr(recipe, k) if hasattr(recipe, k) else getattr(resumed, k)

    conflicts = [f"--{k.replace('_', '-')} {given[k]} (the run's: {recorded(k)})" for k in _WHAT
                 if given.get(k) is not None and _normal(given[k]) != _normal(recorded(k))]
    if conflicts:
        raise ValueError(f"--resume continues the run in {config.run_dir()} as it was started; these flags "
                         f"conflict with it: {'; '.join(conflicts)}; drop them, or start a new run with another "
                         f"--out")
    for k in ("devices", "progress", "data_dir", *_HW):  # where and how to run may change; what to train may not
        if k in kw and kw[k] is not None:
            setattr(resumed, k, kw[k])
    resumed.out, resumed.resume = str(config.run_dir()), True
    if args.steps is not None and args.steps != resumed.resolved_recipe().steps:
        if resumed.resolved_recipe().scheduler in ("cosine", "onecycle"):
            raise ValueError("--steps cannot change when resuming a run with a cosine/onecycle schedule")
        resumed.steps = args.steps
    return resumed


def _normal(value):
    return value.lower() if isinstance(value, str) else value


def describe(config) -> str:
    """Return a one-line description of a run: model, data and the resolved recipe."""
    r = config.resolved_recipe()
    what = config.model + (f" ({config.transform})" if config.model.startswith("st-") else "")
    momentum = f" momentum {r.momentum:g}" if r.optimizer == "sgd" and r.momentum else ""
    length = f"{config.epochs} epochs" if config.epochs else f"{r.steps} steps"
    return (f"{what} on {config.dataset.upper()}, recipe {config.recipe}: {r.optimizer} lr {r.lr:g}{momentum}, "
            f"{r.scheduler} schedule, batch {r.batch_size}, {length}, loc lr x{r.loc_lr_scale:g}")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    config = config_from_args(args)
    launched_worker = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
    if not launched_worker:  # DDP re-runs this command in every other process
        print(f"stnkit train: {describe(config)}; run dir {config.run_dir()}", flush=True)
    from stnkit.training import fit
    from stnkit.training.callbacks import PrintValidation
    from stnkit.training.errors import RunInterrupted

    try:
        metrics = fit(config, overwrite=args.overwrite,
                      callbacks=[] if config.progress else [PrintValidation("  ")])
    except RunInterrupted as e:
        e.hint = f"resume with: stnkit train --out {config.run_dir()} --resume"
        raise
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:  # under DDP every process returns here; one report is enough
        return 0
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"test error {metrics['test_err']:.2f} % (val {metrics['val_err']:.2f} %), {metrics['steps']} steps, "
              f"{metrics['train_s']:.0f} s training, {metrics['params']:,} parameters; "
              f"{Path(metrics['run_dir']) / 'metrics.json'}")
    return 0
