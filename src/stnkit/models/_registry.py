"""Name -> factory registry of models (timm's idea, minus the size)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["build", "create", "list_models", "model_args", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ARGS: dict[str, tuple[str, ...]] = {}  # each builder's keyword arguments, read once when it is registered

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Register a model factory under a lowercase-hyphen ``name`` (decorator).

    Raises:
        ValueError: the name is already taken.
    """

    def decorator(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        _ARGS[name] = tuple(inspect.signature(fn).parameters)
        return fn

    return decorator


def list_models() -> list[str]:
    """Return the registered model names, sorted.

    Example:
        >>> {"cnn", "fcn", "st-cnn", "st-fcn"} <= set(list_models())
        True
    """
    return sorted(_MODELS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from :func:`list_models`, e.g. ``"st-cnn"``.
        **kwargs: the factory's keyword arguments (``input_size``, ``transform``, ...).

    Returns:
        The model, an ``nn.Module`` mapping (N, C, H, W) images (3-D models: (N, C, D, H, W) volumes) to
        (N, num_classes) logits.

    Raises:
        ValueError: unknown name (the message lists the known ones).

    Example:
        >>> import torch
        >>> create("st-cnn", input_size=42, st_downsample="output_size")(torch.rand(2, 1, 42, 42)).shape
        torch.Size([2, 10])
    """
    return _MODELS[_key(name)](**kwargs)


def model_args(name: str) -> tuple[str, ...]:
    """Return the keyword arguments a registered model's builder declares, in its order.

    Raises:
        ValueError: unknown name (the message lists the known ones).

    Example:
        >>> "transform" in model_args("st-cnn"), "transform" in model_args("cnn")
        (True, False)
    """
    return _ARGS[_key(name)]


def _key(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return name.lower()


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model from arguments its builder declares (:func:`model_args`), refusing any other.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: the builder's keyword arguments.

    Returns:
        The model, as :func:`create`.

    Raises:
        ValueError: unknown name, or an argument the builder does not take (one line naming it and the ones it does).

    Example:
        >>> build("cnn", input_size=28, param_budget=20_000).__class__.__name__
        'CNN'
    """
    declared = model_args(name)
    extra = [k for k in kwargs if k not in declared]
    if extra:
        raise ValueError(f"model {name!r} takes no argument {', '.join(map(repr, extra))}; it takes "
                         f"{', '.join(declared)}")
    return _MODELS[name.lower()](**kwargs)
