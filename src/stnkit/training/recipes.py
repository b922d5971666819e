"""Named training recipes: the paper's, a fast CPU one, the demo's and a seconds-long smoke test.

A recipe fixes everything about optimisation that is not the architecture; a run's config records the recipe's
name and every resolved value, so a run states exactly how it was trained. :class:`Recipe`'s fields are the one
declaration of these settings: their metadata (help, choices, checks) generates the ``stnkit train`` override
flags, :class:`~stnkit.training.TrainConfig`'s overrides and the ``--resume`` conflict checks.
"""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["OPTIMIZERS", "PRECISIONS", "RECIPES", "SCHEDULERS", "ST_DOWNSAMPLE", "Recipe", "get_recipe",
           "recipe_settings"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
ST_DOWNSAMPLE = ("output_size", "avgpool")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")

# value checks a setting may name: (predicate, what the error says the value must be)
_CHECKS = {
    "positive": (lambda v: v > 0, "positive"),
    "non-negative": (lambda v: v >= 0, ">= 0"),
    "fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
}


def _setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None, check: str | None = None,
             resumable: bool = False) -> Any:
    """Declare a recipe field: default, one line of help, allowed values, and whether ``--resume`` may change it."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check,
                                            "resumable": resumable})


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of a training run.

    Every field but ``name`` and ``note`` is a setting: ``stnkit train --<field-name>`` and
    ``TrainConfig(<field>=...)`` override it, and ``--resume`` refuses to change it (see :func:`recipe_settings`).

    Args:
        name: the recipe's name.
        optimizer: ``"sgd"`` (momentum 0 = plain SGD), ``"adam"`` or ``"adamw"``.
        lr: base (peak, for one-cycle) learning rate.
        momentum: SGD momentum.
        weight_decay: L2 (SGD, Adam) or decoupled (AdamW) weight decay.
        scheduler: ``"none"``, ``"step"`` (x ``gamma`` every ``step_size`` steps), ``"cosine"`` (to 0 at the last
            step) or ``"onecycle"`` (warm-up over ``pct_start`` of the steps, then cosine annealing).
        step_size: steps between decays of the step schedule.
        gamma: decay factor of the step schedule.
        pct_start: warm-up fraction of the one-cycle schedule.
        batch_size: training batch size.
        steps: optimiser steps (iterations).
        eval_every: steps between validations (and checkpoints).
        loc_lr_scale: learning-rate multiplier of the localisation nets (:func:`stnkit.param_groups`).
        st_downsample: how ST models halve their output for RTS and TC: ``"output_size"`` (sample at half size)
            or ``"avgpool"`` (sample at full size, then 2x2 average pooling, the paper's).
        channels_last: run convolutions in channels-last memory format (faster oneDNN kernels on CPUs).
        precision: Lightning precision, or ``"auto"``: ``"bf16-mixed"`` on CPUs with native bfloat16 arithmetic
            (AVX512-BF16, AMX), ``"32-true"`` elsewhere. Grids and sampling stay float32 either way.
        note: why the recipe is what it is.

    Example:
        >>> Recipe("mine", lr=0.1).scheduler
        'step'
    """

    name: str
    optimizer: str = _setting("sgd", "optimiser", choices=OPTIMIZERS)
    lr: float = _setting(0.01, "base (peak, for onecycle) learning rate", check="positive")
    momentum: float = _setting(0.0, "SGD momentum", check="non-negative")
    weight_decay: float = _setting(0.0, "weight decay (decoupled for adamw)", check="non-negative")
    scheduler: str = _setting("step", "learning-rate schedule, stepped per iteration", choices=SCHEDULERS)
    step_size: int = _setting(50_000, "steps between decays of the step schedule", check="positive")
    gamma: float = _setting(0.1, "decay factor of the step schedule", check="positive")
    pct_start: float = _setting(0.25, "warm-up fraction of the onecycle schedule", check="fraction")
    batch_size: int = _setting(256, "training batch size", check="positive")
    steps: int = _setting(150_000, "optimiser steps", check="positive")
    eval_every: int = _setting(5_000, "steps between validations and checkpoints", check="positive")
    loc_lr_scale: float = _setting(1.0, "learning-rate multiplier of the localisation nets", check="non-negative")
    st_downsample: str = _setting("avgpool", "how ST models halve their output on RTS/TC/addition",
                                  choices=ST_DOWNSAMPLE)
    channels_last: bool = _setting(False, "channels-last convolutions")
    precision: str = _setting("32-true", "Lightning precision; auto = bf16-mixed on CPUs with native bfloat16",
                              choices=PRECISIONS, resumable=True)
    note: str = ""

    def to_dict(self) -> dict:
        """Return the recipe as a JSON-ready dict."""
        return asdict(self)


def recipe_settings() -> tuple[Field, ...]:
    """Return the recipe's settings: the fields of :class:`Recipe` that runs may override (all but name, note).

    Each field's ``metadata`` holds ``"help"`` (one line), ``"choices"`` (allowed strings or None), ``"check"``
    (``"positive"``, ``"non-negative"``, ``"fraction"`` or None) and ``"resumable"`` (whether a resumed run may
    change it: how it runs, not what it trains).

    Example:
        >>> [f.name for f in recipe_settings()][:3]
        ['optimizer', 'lr', 'momentum']
    """
    return tuple(f for f in fields(Recipe) if "help" in f.metadata)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "paper", optimizer="sgd", lr=0.01, momentum=0.0, scheduler="step", step_size=50_000, gamma=0.1,
            batch_size=256, steps=150_000, eval_every=5_000, st_downsample="avgpool",
            note="Jaderberg et al. 2015, App. A.4: plain SGD, lr 0.01 / 10 every 50k iterations, batch 256, no "
                 "weight decay or dropout, 150k iterations",
        ),
        Recipe(
            "cpu", optimizer="adam", lr=3e-3, scheduler="onecycle", pct_start=0.2, batch_size=128, steps=15_000,
            eval_every=1_000, loc_lr_scale=3.0, st_downsample="output_size", channels_last=True, precision="auto",
            note="fast CPU convergence, measured in results/recipes/: Adam 3e-3 with a one-cycle schedule (SGD with "
                 "momentum was 4x worse at equal steps), localisation lr x3 (x0.1 and x10 were worse), batch 128, "
                 "bf16 autocast where the CPU has native bfloat16 (1.7x faster here); 15k steps = 1.9M samples: "
                 "ST-CNN on RTS 0.89 % test error after 13 minutes on 2 idle cores (AVX512-BF16), 1.50 % in a "
                 "second run whose localisation net died at the one-cycle peak (Table 1's long budget uses x1); at "
                 "x3 the localisation nets on cluttered inputs (Table 1's TC, the attention models) died or left "
                 "the image within 1,000 steps: use x1 there",
        ),
        Recipe(
            "demo", optimizer="adam", lr=3e-3, scheduler="onecycle", pct_start=0.2, batch_size=128, steps=1_000,
            eval_every=500, loc_lr_scale=3.0, st_downsample="output_size", channels_last=True, precision="auto",
            note="the cpu recipe cut to 1k steps so `stnkit demo` trains an ST-CNN and the (2-4x slower) CNN in "
                 "about 5 minutes on 2 cores",
        ),
        Recipe(
            "smoke", optimizer="adam", lr=3e-3, scheduler="none", batch_size=16, steps=8, eval_every=4,
            st_downsample="output_size",
            note="seconds-long runs for tests and quick checks; says nothing about accuracy",
        ),
    )
}


def get_recipe(name: str | Recipe, **overrides: Any) -> Recipe:
    """Return a named recipe, with fields replaced by the non-None ``overrides``.

    Raises:
        ValueError: unknown recipe name, field or field value.

    Example:
        >>> get_recipe("paper", steps=10).steps
        10
    """
    if isinstance(name, Recipe):
        recipe = name
    elif name in RECIPES:
        recipe = RECIPES[name]
    else:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    unknown = set(overrides) - set(Recipe.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
    recipe = replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    for f in recipe_settings():
        _check(f, getattr(recipe, f.name))
    return recipe


def _check(f: Field, value: Any) -> None:
    choices, check = f.metadata["choices"], f.metadata["check"]
    if choices is not None and value not in choices:
        raise ValueError(f"unknown {f.name} {value!r}; expected one of {', '.join(choices)}")
    if check is not None:
        ok, what = _CHECKS[check]
        if not ok(value):
            kind = " integer" if f.type == "int" and check == "positive" else ""
            raise ValueError(f"{f.name} must be {'a ' if kind else ''}{what}{kind}; got {value}")
