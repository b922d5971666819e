"""``python -m stnkit.bench``: run the benchmark suite (see :mod:`stnkit.bench`)."""

from stnkit.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
