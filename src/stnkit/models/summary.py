"""Parameter counts and a layer-by-layer summary of a model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stnkit.modules import SpatialTransformer

__all__ = ["count_params", "summary"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters (each shared tensor counted once).

    Example:
        >>> count_params(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summary(model: nn.Module, input_shape: Sequence[int]) -> str:
    """Return a table of the model's weight-bearing layers with output shapes and parameter counts.

    A forward pass on zeros of ``input_shape`` records each leaf module's output shape.

    Args:
        model: any module.
        input_shape: shape of the input, e.g. (1, 1, 42, 42).

    Returns:
        A multi-line string: one row per leaf module (and per spatial transformer), then the total.

    Example:
        >>> print(summary(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2)).splitlines()[-1])
        total parameters: 10
    """
    rows: list[tuple[str, str, str, int]] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, args, output) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else "-"
            n = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((name, type(module).__name__, str(shape), n))
        return hook

    for name, module in model.named_modules():
        own = sum(1 for _ in module.parameters(recurse=False))
        if next(module.children(), None) is None or own or isinstance(module, SpatialTransformer):
            hooks.append(module.register_forward_hook(record(name or type(model).__name__)))
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters(), None)
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=p.device if p is not None else None))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    w_name = max([len(r[0]) for r in rows] + [5])
    w_type = max([len(r[1]) for r in rows] + [4])
    w_shape = max([len(r[2]) for r in rows] + [12])
    lines = [f"{'layer':<{w_name}}  {'type':<{w_type}}  {'output shape':<{w_shape}}  {'params':>9}"]
    lines += [f"{n:<{w_name}}  {t:<{w_type}}  {s:<{w_shape}}  {c:>9,}" for n, t, s, c in rows]
    lines.append(f"total parameters: {count_params(model):,}")
    return "\n".join(lines)
