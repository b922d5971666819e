"""The one runner of every reproduction: cells x seeds, resumable per cell, locked, provenance per cell.

Each finished cell writes ``<out>/cells/<key>/result.json``; a rerun skips it (and says so) and resumes an
interrupted one from its seeds' runs. ``<out>/budget.json`` keeps one budget per folder, and ``<out>/<name>.json`` /
``<name>.md`` are rewritten after every cell, the markdown ending with ``<out>/NOTES.md`` verbatim.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stnkit.files import FolderLock, FolderLockedError
from stnkit.reproduce.experiment import Budget, Cell, Experiment, SeedRun
from stnkit.reproduce.results import CellStore, atomic_write_text, code_line, provenance

__all__ = ["SETUP_POLL_S", "check_budget", "claim", "run", "run_cell", "write_outputs"]


def check_budget(out: Path, budget: Budget) -> None:
    """Refuse to mix budgets in one output folder (``budget.json`` records the first one used, by any name)."""
    marker = out / "budget.json"
    if marker.exists():
        recorded = json.loads(marker.read_text()).get("budget")
        if recorded != budget.name and recorded not in budget.aliases:
            raise ValueError(f"{out} holds results of the {recorded!r} budget; use another --out for "
                             f"{budget.name!r}")
    else:
        atomic_write_text(marker, json.dumps({"budget": budget.name}) + "\n")


def claim(cell_dir: Path) -> FolderLock | None:
    """Take a cell for this process: an exclusive :class:`~stnkit.files.FolderLock` on ``cell_dir``.

    Two background runs of one reproduction (e.g. one per core, on overlapping cell patterns) must never run the
    same cell into the same folder. Returns the held lock (release it when done), or None when another process
    holds it. The kernel drops the lock of a process that dies, so a killed run leaves no stale lock behind.
    """
    try:
        return FolderLock(cell_dir, "cell").acquire()
    except FolderLockedError:
        return None


SETUP_POLL_S = 1.0  # how often a run waits for another process's setup cell


RUN_ONLY = ("threads",)  # fields that say how a cell runs, not what it computes: not recorded as overrides


def run_cell(experiment: Experiment, cell: Cell, budget: Budget, out: Path, n_seeds: int,
             data_dir: str | None = None, progress: bool = True, overrides: dict[str, Any] | None = None,
             log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every seed of one cell (each resuming where it stopped) and return its result (not saved)."""
    run_seed = cell.run_seed or experiment.run_seed
    summarize = cell.summarize or experiment.summarize
    fields = {**budget.fields_for(cell), **(overrides or {})}
    store = CellStore(out)
    seeds = []
    for seed in range(n_seeds):
        log(f"{cell.key} seed {seed}: running ({budget.name} budget)")
        seeds.append(run_seed(SeedRun(cell, seed, fields, store.run_dir(cell.key, seed), out, data_dir, progress)))
    won = {**budget.cell_overrides(cell.key), **{k: v for k, v in (overrides or {}).items() if k not in RUN_ONLY}}
    return {"key": cell.key, "label": cell.label, **summarize(cell, seeds), "seeds": n_seeds, "budget": budget.name,
            "paper": cell.paper, **({"overrides": won} if won else {}), **cell.info, **provenance()}


def _prefixed(log: Callable[[str], Any], prefix: str) -> Callable[[str], Any]:
    def prefixed(line: str) -> Any:
        return log(prefix + line)

    return prefixed


def run(
    experiment: Experiment,
    out: str | Path | None = None,
    budget: str | None = None,
    cells: Sequence[str] | None = None,
    seeds: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    figures: bool = True,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the selected cells of an experiment (skipping finished ones), then write its tables and figures.

    Args:
        experiment: what to run.
        out: output folder (default ``results/<name>``); its ``cells/`` hold every cell's runs and result.
        budget: a budget's name or old alias (default the experiment's ``default_budget``).
        cells: ``--cells`` patterns (see :meth:`Experiment.select`); None = all.
        seeds: seeds per cell (averaged); default the budget's.
        data_dir: MNIST folder (default ``$STNKIT_DATA``, then the cache).
        progress: progress bars.
        figures: draw the figures.
        overrides: fields for every cell that win over everything (e.g. ``{"threads": 2}``); recorded with the
            budget's per-cell overrides in each result's ``overrides``, except :data:`RUN_ONLY` ones.
        log: where progress lines go.

    Returns:
        The table as written to ``<out>/<name>.json``.

    Raises:
        ValueError: an unknown budget, a pattern matching no cell, seeds < 1, or a folder of another budget.
    """
    b = experiment.budget(budget, log)
    out = Path(out or f"results/{experiment.name}")
    chosen = experiment.select(cells)
    n_seeds = seeds or b.seeds
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {n_seeds}")
    check_budget(out, b)
    store = CellStore(out)
    todo = [*experiment.setup, *chosen]
    pending = any(not _finished(store.load(c.key), c.seeds or n_seeds) for c in chosen)
    skipped = []
    for i, cell in enumerate(todo, 1):
        tag = f"[{i}/{len(todo)}] {cell.key}"
        want = cell.seeds or n_seeds
        setup = cell in experiment.setup
        lock, done = _take(experiment, store, cell, want, setup and pending, tag, log)
        if lock is None:
            if done:
                skipped.append(cell.key)
            continue
        t0 = time.time()
        try:
            result = run_cell(experiment, cell, b, out, want, data_dir, progress, overrides,
                              log=_prefixed(log, f"[{i}/{len(todo)}] "))
            store.save(cell.key, result)
        finally:
            lock.release()
        log(f"{tag}: {experiment.headline(result)}, {time.time() - t0:.0f} s")
        if not setup:
            write_outputs(experiment, out, b, figures=False)
    if skipped:
        log(f"{len(skipped)} cell(s) already done in {out} skipped: {', '.join(skipped)}; to run them again, give "
            f"another --out (or delete their {out}/cells/<key>/result.json)")
    if experiment.after_cells is not None:
        experiment.after_cells(out, b, log)
    return write_outputs(experiment, out, b, figures=figures, data_dir=data_dir)


def _finished(result: dict[str, Any] | None, want: int) -> bool:
    return result is not None and result.get("seeds", 0) >= want


def _take(experiment: Experiment, store: CellStore, cell: Cell, want: int, needed: bool, tag: str,
          log: Callable[[str], Any]) -> tuple[FolderLock | None, bool]:
    """Lock a cell that is to run, or log why it does not run: ``(lock, False)``, or ``(None, finished)``.

    A ``needed`` cell is a setup cell whose runs the pending cells read: one finished without its checkpoints (they
    are never committed) is trained again, and one held by another process is waited for, not skipped.
    """

    def finished() -> tuple[dict[str, Any] | None, bool]:
        """The cell's result if it counts as done, and whether it lacks the checkpoints a ``needed`` cell must keep."""
        done = store.load(cell.key)
        if not _finished(done, want):
            return None, False
        if needed and not store.has_checkpoints(cell.key, want):
            return None, True
        return done, False

    waiting = False
    while True:
        done, _ = finished()
        if done is not None:
            log(f"{tag}: done ({experiment.headline(done)}), skipped")
            return None, True
        lock = claim(store.cell_dir(cell.key))
        if lock is not None:
            done, stale = finished()  # another process may have finished it meanwhile
            if done is not None:
                lock.release()
                continue
            if stale:
                log(f"{tag}: done, but the cells to run need its checkpoints, which are never committed: "
                    "training it again")
                store.discard(cell.key)
            return lock, False
        if not needed:
            log(f"{tag}: being run by another process, skipped")
            return None, False
        if not waiting:
            log(f"{tag}: being run by another process; waiting for it (the other cells need it)")
            waiting = True
        time.sleep(SETUP_POLL_S)


def write_outputs(experiment: Experiment, out: str | Path, budget: Budget, figures: bool = True,
                  data_dir: str | None = None) -> dict[str, Any]:
    """(Re)write ``<name>.json`` and ``<name>.md`` (and the figures) from the finished cells in ``out``.

    The markdown is the experiment's ``render`` of the table, the versions and commits its cells came from
    (:func:`~stnkit.reproduce.results.code_line`), then ``<out>/NOTES.md`` verbatim, where present.
    """
    out = Path(out)
    store = CellStore(out)
    keys = [c.key for c in experiment.cells]
    if figures and experiment.figures is not None:
        experiment.figures(out, store.finished(keys), data_dir)
    table = {"budget": budget.name, **(experiment.describe(out, budget) if experiment.describe else {}),
             "cells": store.table_cells(keys)}
    atomic_write_text(out / f"{experiment.name}.json", json.dumps(table, indent=experiment.json_indent) + "\n")
    markdown = experiment.render(table).rstrip("\n") + "\n\n" + code_line(table["cells"]) + "\n"
    notes = out / "NOTES.md"
    if notes.exists():
        markdown = markdown.rstrip("\n") + "\n\n" + notes.read_text()
    atomic_write_text(out / f"{experiment.name}.md", markdown)
    return table
