"""The ``stnkit`` command line.

Each subcommand is a small module in :mod:`stnkit.commands` exposing ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int`` (optional: ``ORDER`` for the help listing, ``DESCRIPTION``, ``ADD_HELP = False`` and
``FORWARD_ARGS = True`` to receive unparsed arguments in ``args.forwarded``); modules found there are registered
automatically, so adding a command is adding a file.
Heavy imports (Lightning, matplotlib) happen inside ``run``, so ``stnkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from stnkit import __version__

__all__ = ["build_parser", "command_modules", "main"]


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line (no usage dump) and raise instead of exiting the process."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


class _UsageError(Exception):
    pass


_TRAIN_EXTRAS = ("lightning", "matplotlib", "PIL")  # the modules of the [train] extra that commands import


def command_modules() -> list[ModuleType]:
    """Return the subcommand modules of :mod:`stnkit.commands`, in display order."""
    import stnkit.commands as pkg

    mods = [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)
            if not m.name.startswith("_")]
    mods = [m for m in mods if hasattr(m, "NAME") and hasattr(m, "run")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every registered subcommand."""
    parser = _Parser(prog="stnkit", description="Spatial Transformer Networks (Jaderberg et al. 2015): train, "
                     "evaluate and visualise the paper's models.")
    parser.add_argument("--version", action="version", version=f"stnkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's info messages")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           add_help=getattr(mod, "ADD_HELP", True))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _forward=getattr(mod, "FORWARD_ARGS", False))
    return parser


def _user_error(e: BaseException) -> bool:
    """Whether an exception is the user's to fix (bad value, missing file, ...) rather than a bug."""
    from stnkit.training.errors import NonFiniteLossError

    return isinstance(e, (ValueError, OSError, NonFiniteLossError)) or type(e).__name__ == "MisconfigurationException"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stnkit`` command line; returns the exit status.

    Example:
        >>> main(["no-such-command"])  # a one-line message on stderr, exit status 2
        2
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and not getattr(args, "_forward", False):
            parser.parse_args(argv)  # raises the usual "unrecognized arguments" error of the right subparser
        args.forwarded = unknown  # commands that pass their arguments on (bench) get them here
    except _UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except SystemExit as e:  # --help, --version
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if not args.verbose:  # Lightning's "GPU available" banners and tips; warnings and errors still show
        # (the child loggers: Lightning resets its package loggers to INFO when it is imported)
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.fabric.utilities.distributed", "lightning.pytorch.accelerators.cuda"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from stnkit.training.errors import RunInterrupted

    try:
        return int(args._run(args) or 0)
    except RunInterrupted as e:  # a checkpoint was saved: say so, and how to go on, in one line
        hint = e.hint or "rerun the same command to resume"
        print(f"stnkit {args.command}: {e}; {hint}", file=sys.stderr)
        return e.exit_status
    except ModuleNotFoundError as e:  # a library-only install (pip install stnkit) has no training stack
        missing = (e.name or "").split(".")[0]
        if args.debug or missing not in _TRAIN_EXTRAS:
            raise
        print(f"stnkit {args.command}: needs {missing}, which the library alone does not install; "
              f"pip install 'stnkit[train]'", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stnkit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug or not _user_error(e):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"stnkit {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
