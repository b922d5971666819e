"""``stnkit bench``: forwards its arguments to :func:`stnkit.bench.main` (timing and accuracy benchmarks)."""

from __future__ import annotations

import argparse

NAME = "bench"
HELP = "benchmarks (arguments are passed on to stnkit.bench; see stnkit bench --help)"
ORDER = 50
ADD_HELP = False  # --help goes to stnkit.bench
FORWARD_ARGS = True  # every argument after "bench" goes to stnkit.bench.main


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Take no arguments of its own."""


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    try:
        from stnkit.bench import main as bench_main
    except ModuleNotFoundError as e:
        if e.name not in ("stnkit.bench", "stnkit"):
            raise
        raise OSError("stnkit bench is not available in this installation (no stnkit.bench module)") from None
    return int(bench_main(list(args.forwarded)) or 0)
