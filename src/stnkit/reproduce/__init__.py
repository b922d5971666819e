"""One-command reproductions of the paper's experiments, each an :class:`Experiment` (``stnkit reproduce NAME``)."""

from stnkit.reproduce.experiment import Budget, Cell, Experiment, SeedRun
from stnkit.reproduce.results import CellStore, provenance
from stnkit.reproduce.runner import run, write_outputs
from stnkit.reproduce.table1 import EXPERIMENT as TABLE1

#: every reproduction, by the name ``stnkit reproduce`` takes
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (TABLE1,)}

__all__ = ["EXPERIMENTS", "Budget", "Cell", "CellStore", "Experiment", "SeedRun", "provenance", "run", "write_outputs"]
