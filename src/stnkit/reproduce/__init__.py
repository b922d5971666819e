"""One-command reproductions of the paper's experiments, each an :class:`Experiment` (``stnkit reproduce NAME``)."""

from stnkit.reproduce import addition, attention, coloc, mnist3d, registration, svhn, table1
from stnkit.reproduce.experiment import Budget, Cell, Experiment, SeedRun
from stnkit.reproduce.results import CellStore, provenance
from stnkit.reproduce.runner import run, write_outputs

#: every reproduction, by the name ``stnkit reproduce`` takes
EXPERIMENTS: dict[str, Experiment] = {m.EXPERIMENT.name: m.EXPERIMENT for m in (table1, coloc, attention, addition,
                                                                                mnist3d, svhn, registration)}

__all__ = ["EXPERIMENTS", "Budget", "Cell", "CellStore", "Experiment", "SeedRun", "provenance", "run", "write_outputs"]
