"""``stnkit train``: train one model on one distorted-MNIST variant (the programmatic twin is ``training.fit``)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from stnkit.commands._common import add_deprecated_alias, add_hardware_args, devices, progress_default, set_threads

NAME = "train"
HELP = "train a model on distorted MNIST and write a run directory"
ORDER = 10
DESCRIPTION = (
    "Train FCN/CNN/ST-FCN/ST-CNN on a distorted-MNIST variant. The recipe (--recipe) sets optimiser, "
    "schedule, batch size and steps; one flag per recipe setting overrides it. Writes config.json, logs/metrics.csv, "
    "checkpoints/{last,best}.ckpt and metrics.json into the run directory."
)

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this command's arguments to its parser: run flags by hand, one override flag per recipe setting."""
    from stnkit.models import list_models
    from stnkit.training import DATASETS, RECIPES
    from stnkit.transforms import available

    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default rts)")
    p.add_argument("--model", help=f"one of {', '.join(list_models())} (default st-cnn)")
    p.add_argument("--transform", help=f"ST models: one of {', '.join(available())} (default affine)")
    p.add_argument("--recipe", help=f"training recipe: {', '.join(RECIPES)} (default cpu)")
    add_deprecated_alias(p, "--budget", "--recipe")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--epochs", type=int, help="epochs over the training set instead of --steps (default: none)")
    g = p.add_argument_group("recipe overrides")
    add_recipe_arguments(g, {"steps": steps})
    g.add_argument("--bound", type=float,
                   help="ST models: keep the transform's parameters within this tanh bound of the identity (guards "
                        "against a diverging localisation net; default unbounded, as in the paper)")
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


def add_recipe_arguments(g: Any, groups: dict[str, Any]) -> None:
    """Add ``--<setting>`` for every recipe setting (default None: the recipe's value) to ``g``.

    ``groups`` places a setting's flag in another group instead (``--steps`` excludes ``--epochs``). Values are
    checked once, by :func:`stnkit.training.get_recipe`.
    """
    from stnkit.training import RECIPES
    from stnkit.training.recipes import recipe_settings

    types = {"int": int, "float": float, "str": str}
    for f in recipe_settings():
        values = {name: getattr(r, f.name) for name, r in RECIPES.items()}
        shown = f"{next(iter(values.values()))} in every recipe" if len(set(values.values())) == 1 else \
            ", ".join(f"{name} {v}" for name, v in values.items())
        choices = f"; one of {', '.join(f.metadata['choices'])}" if f.metadata["choices"] else ""
        help = f"{f.metadata['help']}{choices} (default: the recipe's: {shown})"
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            groups.get(f.name, g).add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            groups.get(f.name, g).add_argument(flag, type=types[str(f.type)], help=help)


def config_from_args(args: argparse.Namespace):
    """Build the :class:`TrainConfig` of parsed ``train`` arguments (from the run's config.json on --resume).

    On ``--resume`` a flag that changes what the run trains (:meth:`TrainConfig.fixed_on_resume`: model, data,
    recipe settings, seed, ...) and differs from the run's recorded value is refused with one line listing each
    conflict; where and how it runs (hardware, threads, data folder, progress, precision) and ``--steps``
    (constant schedules only) may change.
    """
    from stnkit.training import TrainConfig
    from stnkit.training.recipes import recipe_settings

    settings = {f.name for f in recipe_settings()}
    names = ({f.name for f in fields(TrainConfig)} | settings) - {"devices", "progress"}
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    given["devices"] = devices(args.devices)
    given["progress"] = progress_default() if args.progress is None else args.progress
    if args.bound is not None:
        if args.bound <= 0:
            raise ValueError(f"--bound must be positive; got {args.bound}")
        given["model_kwargs"] = {"bound": args.bound}
    config = TrainConfig(**given)
    if args.bound is not None and not config.model.startswith("st-"):
        raise ValueError(f"--bound applies to ST models; {config.model!r} has no spatial transformer")
    if not args.resume:
        return config
    saved = config.run_dir() / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"nothing to resume: {saved} does not exist")
    resumed = TrainConfig.load(saved)
    recipe = resumed.resolved_recipe()  # the values the run trains with: its recipe's unless overridden

    def recorded(k: str):
        return getattr(recipe, k) if k in settings else getattr(resumed, k)

    fixed = TrainConfig.fixed_on_resume()
    conflicts = [f"--{k.replace('_', '-')} {given[k]} (the run's: {recorded(k)})" for k in fixed
                 if k in given and _normal(given[k]) != _normal(recorded(k))]
    if conflicts:
        raise ValueError(f"--resume continues the run in {config.run_dir()} as it was started; these flags "
                         f"conflict with it: {'; '.join(conflicts)}; drop them, or start a new run with another "
                         f"--out")
    for k, v in given.items():  # where and how to run may change; what to train may not
        if k in settings and k not in fixed and k != "steps":
            resumed.overrides[k] = v
        elif k not in settings and k not in fixed and k not in ("out", "resume"):
            setattr(resumed, k, v)
    resumed.out, resumed.resume = str(config.run_dir()), True
    if args.steps is not None and args.steps != recipe.steps:
        if recipe.scheduler in ("cosine", "onecycle"):
            raise ValueError("--steps cannot change when resuming a run with a cosine/onecycle schedule")
        resumed.overrides["steps"] = args.steps
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
    set_threads(config.threads)
    launched_worker = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"

    def announce(resolved) -> None:  # after every value is checked: model built, data found
        if not launched_worker:  # DDP re-runs this command in every other process
            print(f"stnkit train: {describe(resolved)}; run dir {resolved.run_dir()}", flush=True)

    from stnkit.training import fit
    from stnkit.training.callbacks import PrintValidation
    from stnkit.training.errors import RunInterrupted

    try:
        metrics = fit(config, overwrite=args.overwrite, on_start=announce,
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
