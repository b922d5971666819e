"""``python -m stnkit`` runs the command-line interface."""

from stnkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
