"""Thin entry point: ``python benchmarks/bench.py [args]`` == ``python -m stnkit.bench [args]`` == ``stnkit bench``.

The suite itself lives in ``src/stnkit/bench`` (importable, tested by tests/bench). The numbers of one full run are
in ``benchmarks/RESULTS.md``; ``--json PATH`` writes the warp rows, ``--markdown PATH`` the report.
"""

import sys

from stnkit.bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
