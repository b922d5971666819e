"""Name -> factory registry of models (timm's idea, minus the size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

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
    factory = _MODELS.get(name.lower()) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return factory(**kwargs)
