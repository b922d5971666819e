"""One-command reproductions of the paper's experiments, resumable per cell (``stnkit reproduce NAME``)."""

from stnkit.reproduce.results import CellStore, provenance

__all__ = ["CellStore", "provenance"]
