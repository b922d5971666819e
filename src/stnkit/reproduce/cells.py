"""Classification cells trained through :func:`stnkit.training.fit`, shared by several reproductions.

The addition, attention and 3-D reproductions use one resumable loop over cells x seeds, with results in a
:class:`~stnkit.reproduce.results.CellStore`.

A :class:`FitCell` names its :class:`~stnkit.training.TrainConfig` fields; a budget adds the recipe's. A finished
cell's ``result.json`` is kept and skipped; a seed whose run has a checkpoint but no ``metrics.json`` resumes from
it (the same as Table 1's cells).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from stnkit.reproduce.results import CellStore, atomic_write_text, fmt, provenance

__all__ = ["FitCell", "budget_recipe", "check_budget", "claim", "run_fit_cells", "select", "train_or_resume"]


@dataclass(frozen=True)
class FitCell:
    """One trained configuration of a reproduction.

    Attributes:
        key: folder name and selector, e.g. ``"st-fcn-x2-tps"``.
        label: row label in the markdown table.
        fields: :class:`~stnkit.training.TrainConfig` fields of the cell (dataset, model, transform, ...).
        paper: the paper's number for this cell (None where it gives none).
        info: extra JSON-ready facts copied into the result (e.g. the crop size).
    """

    key: str
    label: str
    fields: dict[str, Any]
    paper: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


def select(cells: Sequence[Any], patterns: Sequence[str] | None, name: str) -> list[Any]:
    """Return the cells whose ``key`` matches any shell pattern (``*``, ``?``); None or empty selects all.

    Raises:
        ValueError: a pattern that matches no cell (the message lists the keys).
    """
    if not patterns:
        return list(cells)
    chosen: list[Any] = []
    for pattern in patterns:
        hits = [c for c in cells if fnmatch(c.key, pattern.lower())]
        if not hits:
            raise ValueError(f"cell pattern {pattern!r} matches no {name} cell; cells: "
                             f"{', '.join(c.key for c in cells)}")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def budget_recipe(budget_fields: dict[str, Any]) -> dict[str, Any]:
    """The recipe a budget's cells train with: its ``"recipe"`` with the budget's recipe fields applied (JSON-ready).

    Fields that are not recipe fields (subsets, seeds, experiment-specific keys) are left out.
    """
    from stnkit.training.recipes import Recipe, get_recipe  # stnkit.training loads Lightning: only when asked

    fields = dict(budget_fields)
    name = fields.pop("recipe")
    return get_recipe(name, **{k: v for k, v in fields.items() if k in Recipe.__dataclass_fields__}).to_dict()


def check_budget(out: Path, budget: str) -> None:
    """Refuse to mix budgets in one output folder (``budget.json`` records the first one used)."""
    marker = out / "budget.json"
    if marker.exists():
        recorded = json.loads(marker.read_text()).get("budget")
        if recorded != budget:
            raise ValueError(f"{out} holds results of the {recorded!r} budget; use another --out for {budget!r}")
    else:
        atomic_write_text(marker, json.dumps({"budget": budget}) + "\n")


def claim(cell_dir: Path) -> Path | None:
    """Take a cell for this process: create ``cell_dir/.lock`` holding our host and pid.

    Two background runs of one reproduction (e.g. one per core, on overlapping cell patterns) must never train the
    same cell into the same folder. Returns the lock's path (delete it when done), or None when a live process on
    this host holds it. A lock left by a process that no longer exists (killed) is taken over.
    """
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = cell_dir / ".lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            host, _, pid = lock.read_text().partition(" ")
            if host == socket.gethostname() and pid.strip().isdigit() and _alive(int(pid)):
                return None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return lock
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def train_or_resume(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Return a run's metrics: read them if it finished, else train (resuming from its checkpoint if any)."""
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    from stnkit.training import TrainConfig, fit  # Lightning is imported only when training

    resume = (run_dir / "checkpoints" / "last.ckpt").exists()
    return fit(TrainConfig(out=str(run_dir), resume=resume, **fields))


def run_fit_cells(
    out: Path,
    cells: Sequence[FitCell],
    budget: str,
    budget_fields: dict[str, Any],
    n_seeds: int,
    data_dir: str | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], Any] = print,
    after_cell: Callable[[], Any] | None = None,
) -> None:
    """Train and test every cell (skipping finished ones) and save each one's ``result.json``.

    Args:
        out: the reproduction's output folder.
        cells: the cells to run, in order.
        budget: the budget's name (recorded in each result).
        budget_fields: TrainConfig fields of the budget (recipe, steps, subsets, ...); a cell's own fields win.
        n_seeds: seeds per cell (averaged).
        data_dir: MNIST folder.
        progress: progress bars.
        overrides: extra TrainConfig fields for every cell (win over everything).
        log: where progress lines go.
        after_cell: called after each finished cell (e.g. to rewrite the tables).
    """
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {n_seeds}")
    check_budget(out, budget)
    store = CellStore(out)
    for i, cell in enumerate(cells, 1):
        done = store.load(cell.key)
        if done is not None and done.get("seeds", 0) >= n_seeds:
            log(f"[{i}/{len(cells)}] {cell.key}: done ({done['error']:.2f} %), skipped")
            continue
        lock = claim(store.cell_dir(cell.key))
        if lock is None:
            log(f"[{i}/{len(cells)}] {cell.key}: being trained by another process, skipped")
            continue
        t0 = time.time()
        results = []
        try:
            for seed in range(n_seeds):
                log(f"[{i}/{len(cells)}] {cell.key} seed {seed}: training ({budget} budget)")
                fields = {**budget_fields, **cell.fields, "seed": seed, "data_dir": data_dir, "progress": progress,
                          **(overrides or {})}
                results.append(train_or_resume(store.cell_dir(cell.key) / f"s{seed}", **fields))
        finally:
            lock.unlink(missing_ok=True)
        errors = [float(r["test_err"]) for r in results]
        result = {
            "key": cell.key, "label": cell.label, **{k: cell.fields.get(k) for k in ("dataset", "model", "transform")},
            "error": statistics.fmean(errors), "errors": errors, "seeds": n_seeds,
            "iterations": int(results[0]["steps"]), "batch_size": results[0].get("batch_size"),
            "train_s": round(sum(float(r["train_s"]) for r in results), 1),
            "wall_s": round(sum(float(r["wall_s"]) for r in results), 1), "params": int(results[0]["params"]),
            "budget": budget, "recipe": results[0].get("recipe"), "paper": cell.paper, **cell.info, **provenance(),
        }
        store.save(cell.key, result)
        log(f"[{i}/{len(cells)}] {cell.key}: {result['error']:.2f} % (paper {fmt(cell.paper, 1)} %), "
            f"{time.time() - t0:.0f} s")
        if after_cell is not None:
            after_cell()
