"""Experiments as data: what a reproduction declares, and the default way to run one seed (train through ``fit``).

Every reproduction (``stnkit reproduce NAME``) is one :class:`Experiment` run by :func:`stnkit.reproduce.runner.run`.
The common cell is a classifier trained through :func:`stnkit.training.fit` (:func:`fit_seed`, :func:`fit_summary`);
any other cell (an evaluation only, a peer library's model, an optimisation that is not ``fit``) brings its own
callables.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from stnkit.reproduce.results import fmt

__all__ = ["Budget", "Cell", "Experiment", "SeedRun", "budget_recipe", "fit_headline", "fit_seed", "fit_summary",
           "select"]


@dataclass(frozen=True)
class SeedRun:
    """What a seed function gets: one seed of one cell, with every field resolved.

    Attributes:
        cell: the cell.
        seed: the seed (0, 1, ...).
        fields: the cell's fields for this budget (:meth:`Budget.fields_for`), plus the run's overrides (e.g.
            ``threads``).
        run_dir: this seed's folder, ``<out>/cells/<key>/s<seed>``; a seed function that finds its finished
            result there returns it (resume).
        out: the experiment's output folder (e.g. to find a setup cell's run, ``out / "cells" / "encoder" / "s0"``).
        data_dir: MNIST folder (None: ``$STNKIT_DATA``, then the cache).
        progress: progress bars.
    """

    cell: Cell
    seed: int
    fields: dict[str, Any]
    run_dir: Path
    out: Path
    data_dir: str | None = None
    progress: bool = True


def fit_seed(run: SeedRun) -> dict[str, Any]:
    """Train one seed through :func:`stnkit.training.fit`, or read its ``metrics.json`` when it finished.

    ``run.fields`` are :class:`~stnkit.training.TrainConfig` fields; a run with a checkpoint but no metrics resumes.
    """
    metrics_path = run.run_dir / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    from stnkit.training import TrainConfig, fit  # Lightning is imported only when training

    resume = (run.run_dir / "checkpoints" / "last.ckpt").exists()
    return fit(TrainConfig(**{**run.fields, "seed": run.seed, "data_dir": run.data_dir, "progress": run.progress,
                              "out": str(run.run_dir), "resume": resume}))


def fit_summary(cell: Cell, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the seeds' ``fit`` metrics into a classification cell's result (test error in %, times, size)."""
    errors = [float(r["test_err"]) for r in seeds]
    return {
        **{k: cell.fields.get(k) for k in ("dataset", "model", "transform")},
        "error": statistics.fmean(errors), "errors": errors, "iterations": int(seeds[0]["steps"]),
        "batch_size": seeds[0].get("batch_size"), "train_s": round(sum(float(r["train_s"]) for r in seeds), 1),
        "wall_s": round(sum(float(r["wall_s"]) for r in seeds), 1), "params": int(seeds[0]["params"]),
        "recipe": seeds[0].get("recipe"),
    }


def fit_headline(result: dict[str, Any]) -> str:
    """One progress line's summary of a classification cell: ``1.23 % (paper 0.8 %)``, or ``1.23 %`` without one."""
    paper = result.get("paper")
    return f"{result['error']:.2f} %" + (f" (paper {fmt(paper, 1)} %)" if paper is not None else "")


@dataclass(frozen=True)
class Cell:
    """One configuration of an experiment: a row or table entry, run for one or more seeds.

    Attributes:
        key: folder name (``<out>/cells/<key>``) and what ``--cells`` patterns match, e.g. ``"st-fcn-x2-tps"``.
        label: row label in the markdown.
        fields: the cell's own fields, given to its seed function (for ``fit`` cells: TrainConfig fields such as
            dataset, model, transform); a budget's fields are merged under them, its overrides over them.
        paper: the paper's number for this cell (None where it gives none).
        info: JSON-ready facts copied into the result (e.g. the crop size).
        seeds: a fixed number of seeds (e.g. 1 for a shared encoder); None: the run's.
        run_seed: this cell's seed function where it is not the experiment's.
        summarize: this cell's summary where it is not the experiment's.
    """

    key: str
    label: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    paper: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)
    seeds: int | None = None
    run_seed: Callable[[SeedRun], dict[str, Any]] | None = None
    summarize: Callable[[Cell, list[dict[str, Any]]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Budget:
    """How long an experiment's cells train: fields for every cell, and per-cell overrides.

    Attributes:
        name: e.g. ``"cpu-3k"``; name it so it does not read as a training recipe's name.
        fields: fields of every cell (for ``fit`` cells: ``recipe`` plus TrainConfig fields).
        overrides: the one per-cell mechanism: shell pattern over cell keys -> fields that win over the cell's
            own, applied in order (``{"tc-*": {"loc_lr_scale": 1.0}}``); recorded in each result as ``overrides``.
        seeds: default seeds per cell.
        aliases: old names still accepted, with a one-line deprecation notice (results written under them stay
            valid).
    """

    name: str
    fields: Mapping[str, Any]
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seeds: int = 1
    aliases: tuple[str, ...] = ()

    def cell_overrides(self, key: str) -> dict[str, Any]:
        """The override fields of cell ``key`` (every matching pattern's, later ones winning)."""
        out: dict[str, Any] = {}
        for pattern, fields in self.overrides.items():
            if fnmatch(key, pattern):
                out.update(fields)
        return out

    def fields_for(self, cell: Cell) -> dict[str, Any]:
        """A cell's fields under this budget: the budget's, then the cell's own, then the overrides."""
        return {**self.fields, **cell.fields, **self.cell_overrides(cell.key)}


def select(cells: Sequence[Cell], patterns: Sequence[str] | None, name: str) -> list[Cell]:
    """Return the cells whose ``key`` matches any shell pattern (``*``, ``?``); None or empty selects all.

    Raises:
        ValueError: a pattern that matches no cell (the message lists the keys).
    """
    if not patterns:
        return list(cells)
    chosen: list[Cell] = []
    for pattern in patterns:
        hits = [c for c in cells if fnmatch(c.key, pattern.lower())]
        if not hits:
            raise ValueError(f"cell pattern {pattern!r} matches no {name} cell; cells: "
                             f"{', '.join(c.key for c in cells)}")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def budget_recipe(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe a budget's cells train with: its ``"recipe"`` with the budget's recipe fields applied (JSON-ready).

    Fields that are not recipe fields (subsets, seeds, experiment-specific keys) are left out.
    """
    from stnkit.training import Recipe, get_recipe

    fields = dict(fields)
    name = fields.pop("recipe")
    return get_recipe(name, **{k: v for k, v in fields.items() if k in Recipe.__dataclass_fields__}).to_dict()


@dataclass(frozen=True)
class Experiment:
    """A reproduction declared as data; :func:`stnkit.reproduce.runner.run` runs any of them the same way.

    To add an experiment, write a module in ``stnkit/reproduce/`` that declares, and registers in
    ``stnkit.reproduce.EXPERIMENTS``:

    1. its ``cells``: one :class:`Cell` per table entry (key, label, fields, the paper's number);
    2. its ``budgets``: ``smoke`` (seconds, for the tests), ``cpu-<steps>`` and ``paper``; what differs per cell
       goes in a budget's ``overrides`` (shell patterns over keys), never in code;
    3. ``render``: the table (``{"budget", **describe(...), "cells": [results]}``) as markdown, method only;
       measured findings go in ``<out>/NOTES.md``, which follows the rendered table verbatim;
    4. for cells not trained by ``fit`` (an evaluation, a peer library's model, another optimisation): a
       ``run_seed`` (``SeedRun -> dict``, resuming from ``run.run_dir``) and ``summarize`` (``(cell, seeds) ->
       dict``), here or per :class:`Cell`, and a ``headline``; ``setup`` for cells every run needs first;
    5. optionally ``describe`` (budget facts for the table), ``after_cells`` and ``figures`` (drawn with
       :mod:`stnkit.viz` panels; no matplotlib here).

    The runner gives each result ``key``, ``label``, ``seeds``, ``budget``, ``paper``, ``overrides``, the cell's
    ``info`` and the code's provenance, and handles skip, resume, locks and ``budget.json``.

    Example:
        >>> exp = Experiment(
        ...     name="rts", title="ST-CNN vs CNN on RTS", default_budget="cpu-3k", render=lambda t: "# RTS",
        ...     cells=(Cell("cnn", "CNN", {"dataset": "rts", "model": "cnn"}, paper=0.8),
        ...            Cell("st-cnn", "ST-CNN", {"dataset": "rts", "model": "st-cnn", "transform": "affine"}, 0.5)),
        ...     budgets=(Budget("cpu-3k", {"recipe": "cpu", "steps": 3000}, {"st-*": {"loc_lr_scale": 1.0}}),))
        >>> fields = exp.budget().fields_for(exp.cells[1])
        >>> fields["steps"], fields["model"], fields["loc_lr_scale"]
        (3000, 'st-cnn', 1.0)

    Attributes:
        name: ``stnkit reproduce NAME``; also the table files' stem (``<out>/<name>.json``, ``.md``).
        title: one line for the command's help.
        cells: the table's cells, in order.
        budgets: the budgets; ``default_budget`` names the one used when none is given.
        default_budget: the budget of a plain ``stnkit reproduce NAME``.
        render: ``table -> markdown`` (the table as written to ``<name>.json``).
        run_seed: runs one seed of a cell and returns its JSON-ready result (default :func:`fit_seed`).
        summarize: ``(cell, seed results) -> result`` fields (default :func:`fit_summary`).
        headline: ``result -> str`` for the progress lines (default :func:`fit_headline`).
        setup: cells every run needs first whatever ``--cells`` selects (e.g. a shared encoder); not in the table.
        choose: ``patterns -> cells`` where ``--cells`` is not shell patterns over keys (default :func:`select`).
        describe: ``(out, budget) -> dict``: the table's fields besides ``budget`` and ``cells`` (the recipe ...).
        after_cells: ``(out, budget, log)`` after the cells (e.g. timing every model back to back).
        figures: ``(out, finished results by key, data_dir)``: draw the figures (through :mod:`stnkit.viz`).
        json_indent: indentation of ``<name>.json`` (None: one line, for large per-image results).
    """

    name: str
    title: str
    cells: tuple[Cell, ...]
    budgets: tuple[Budget, ...]
    default_budget: str
    render: Callable[[dict[str, Any]], str]
    run_seed: Callable[[SeedRun], dict[str, Any]] = fit_seed
    summarize: Callable[[Cell, list[dict[str, Any]]], dict[str, Any]] = fit_summary
    headline: Callable[[dict[str, Any]], str] = fit_headline
    setup: tuple[Cell, ...] = ()
    choose: Callable[[Sequence[str] | None], list[Cell]] | None = None
    describe: Callable[[Path, Budget], dict[str, Any]] | None = None
    after_cells: Callable[[Path, Budget, Callable[[str], Any]], Any] | None = None
    figures: Callable[[Path, dict[str, dict[str, Any]], str | None], Any] | None = None
    json_indent: int | None = 2

    def budget(self, name: str | None = None, log: Callable[[str], Any] = print) -> Budget:
        """Return a budget by name or old alias (saying so in one line); None: the default.

        Raises:
            ValueError: an unknown name (the message lists the budgets).
        """
        name = name or self.default_budget
        for b in self.budgets:
            if name == b.name:
                return b
            if name in b.aliases:
                log(f"budget {name!r} of {self.name} is now called {b.name!r}; the old name will be removed")
                return b
        raise ValueError(f"reproduce {self.name} has no {name!r} budget; choose one of "
                         f"{', '.join(b.name for b in self.budgets)}")

    def select(self, patterns: Sequence[str] | None) -> list[Cell]:
        """The cells chosen by ``--cells`` patterns (all for None)."""
        return self.choose(patterns) if self.choose is not None else select(self.cells, patterns, self.name)
