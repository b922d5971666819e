"""Lightning training of the paper's models: recipes, ``STNLitModule``, and ``fit(TrainConfig)``.

``import stnkit`` does not import this package. Recipes and ``TrainConfig`` load without Lightning; the names that
need it (``STNLitModule``, ``fit``, ``evaluate``, ...) import it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stnkit.training.config import DATASETS, TrainConfig
from stnkit.training.errors import NonFiniteLossError
from stnkit.training.recipes import RECIPES, Recipe, get_recipe

if TYPE_CHECKING:
    from stnkit.training.lit_module import STNLitModule
    from stnkit.training.run import evaluate, fit, load_checkpoint, make_datamodule, resolve_checkpoint

_LAZY = {
    "STNLitModule": "stnkit.training.lit_module",
    "evaluate": "stnkit.training.run",
    "fit": "stnkit.training.run",
    "load_checkpoint": "stnkit.training.run",
    "make_datamodule": "stnkit.training.run",
    "resolve_checkpoint": "stnkit.training.run",
}

__all__ = [
    "DATASETS",
    "RECIPES",
    "NonFiniteLossError",
    "Recipe",
    "STNLitModule",
    "TrainConfig",
    "evaluate",
    "fit",
    "get_recipe",
    "load_checkpoint",
    "make_datamodule",
    "resolve_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # Lightning is imported only when training is used
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
