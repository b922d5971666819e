"""Subcommands of the ``stnkit`` CLI, one module each (see :mod:`stnkit.cli` for the protocol)."""
