"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_hardware_args(p: argparse.ArgumentParser) -> None:
    """Add Lightning's scale-out flags."""
    g = p.add_argument_group("hardware (Lightning)")
    g.add_argument("--accelerator", default="auto", help="cpu, gpu, mps, auto (default auto)")
    g.add_argument("--devices", default="1", help="devices per node: a number or auto (default 1)")
    g.add_argument("--num-nodes", type=int, default=1, help="nodes (default 1)")
    g.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ... (default auto)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")


def add_deprecated_alias(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` as a spelling of the flag ``new``, printing a one-line deprecation notice when used."""
    dest = new.lstrip("-").replace("-", "_")

    class Deprecated(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            print(f"{parser.prog}: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, dest, values)

    p.add_argument(old, dest=dest, action=Deprecated, help=f"deprecated spelling of {new} (default: none)")


def set_threads(n: int | None) -> None:
    """Set torch's process-wide CPU thread count (None: leave torch's default); commands do it, the library not."""
    if n:
        import torch

        torch.set_num_threads(n)


def devices(value: str) -> int | str:
    """Parse ``--devices`` (an int, or a string such as ``auto`` or ``0,1``)."""
    return int(value) if value.isdigit() else value


def progress_default() -> bool:
    """Progress bars only on a terminal."""
    return sys.stderr.isatty()


def print_metrics_table(rows: list[dict], keys: list[tuple[str, str]]) -> None:
    """Print dicts as an aligned table with the given (key, header) columns."""
    cells = [[h for _, h in keys]] + [["-" if r.get(k) is None else _fmt(r.get(k)) for k, _ in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
