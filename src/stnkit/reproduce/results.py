"""Resumable per-cell result files, provenance and markdown helpers shared by every reproduction.

A reproduction is a set of *cells* (one trained/evaluated configuration each). Each finished cell writes
``<out>/cells/<key>/result.json`` atomically; a rerun skips cells whose result exists and resumes the others from
their last checkpoint, so a table can be filled over several background runs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import stnkit
from stnkit.files import atomic_write_text

__all__ = ["CellStore", "atomic_write_text", "code_line", "fmt", "markdown_table", "provenance", "recipe_text",
           "st_health", "trained_model", "transformer_figure", "val_curve"]


def provenance() -> dict[str, Any]:
    """Return ``{"version", "commit"}``: stnkit's version and the git commit of its checkout.

    The commit is ``"unknown"`` outside a git checkout and ends in ``+dirty`` when the package's tracked source
    files differ from it (result files written beside it do not count).
    """
    commit = "unknown"
    src = Path(stnkit.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=src,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        if dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": stnkit.__version__, "commit": commit}


class CellStore:
    """Result files of one reproduction: ``<root>/cells/<key>/result.json``, plus each cell's run folder.

    Args:
        root: the reproduction's output folder (e.g. ``results/table1``).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def cell_dir(self, key: str) -> Path:
        """Folder of one cell (its training runs live below it)."""
        return self.root / "cells" / key

    def run_dir(self, key: str, seed: int) -> Path:
        """Folder of one seed's run of a cell: ``cells/<key>/s<seed>``."""
        return self.cell_dir(key) / f"s{seed}"

    def load(self, key: str) -> dict[str, Any] | None:
        """Return a finished cell's result, or None when the cell has not finished."""
        path = self.cell_dir(key) / "result.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"corrupt result file {path}: {err}; delete it to rerun that cell") from None

    def save(self, key: str, result: dict[str, Any]) -> None:
        """Write a finished cell's result atomically."""
        atomic_write_text(self.cell_dir(key) / "result.json", json.dumps(result, indent=2, sort_keys=True) + "\n")

    def has_checkpoints(self, key: str, seeds: int) -> bool:
        """Whether each of the cell's first ``seeds`` runs holds its last checkpoint (never committed)."""
        return all((self.run_dir(key, seed) / "checkpoints" / "last.ckpt").is_file() for seed in range(seeds))

    def discard(self, key: str) -> None:
        """Delete a cell's result and its seeds' runs, so that it runs again from the start (its lock stays)."""
        (self.cell_dir(key) / "result.json").unlink(missing_ok=True)
        for run_dir in self.cell_dir(key).glob("s[0-9]*"):
            if run_dir.is_dir():
                shutil.rmtree(run_dir)

    def finished(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return ``{key: result}`` for the finished cells among ``keys``."""
        out = {}
        for key in keys:
            res = self.load(key)
            if res is not None:
                out[key] = res
        return out

    def table_cells(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The finished cells among ``keys``, in order, each result with its ``st_health`` (:func:`st_health`)."""
        return [{**res, "st_health": st_health(self.cell_dir(key))} for key, res in self.finished(keys).items()]


def fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """Format a number for a table cell (``—`` for missing)."""
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def recipe_text(budget: str, r: dict[str, Any]) -> str:
    """``Budget **cpu-3k**: recipe `cpu` — adam lr 0.003 (onecycle), batch 128``: a table's opening words."""
    return (f"Budget **{budget}**: recipe `{r['name']}` — {r['optimizer']} lr {r['lr']} ({r['scheduler']}), "
            f"batch {r['batch_size']}")


def code_line(cells: Sequence[dict[str, Any]]) -> str:
    """``Code: stnkit 0.1.0, commit(s) abc (3 cells), def (1 cell).``: what the finished cells came from.

    Example:
        >>> code_line([{"version": "0.1.0", "commit": "abc"}] * 2 + [{"version": "0.1.0", "commit": "def"}])
        'Code: stnkit 0.1.0, commit(s) abc (2 cells), def (1 cell).'
    """
    commits = Counter(str(c.get("commit", "unknown")) for c in cells)
    versions = sorted({str(c.get("version", "unknown")) for c in cells})
    listed = ", ".join(f"{k} ({n} cell{'s' if n > 1 else ''})" for k, n in sorted(commits.items()))
    return f"Code: stnkit {', '.join(versions) or '—'}, commit(s) {listed or '—'}."


def trained_model(out: str | os.PathLike, key: str) -> tuple[Any, Any] | None:
    """Return ``(model, TrainConfig)`` of a cell's first seed from its last checkpoint, or None without one."""
    run_dir = CellStore(out).run_dir(key, 0)
    if not (run_dir / "checkpoints" / "last.ckpt").exists():
        return None
    from stnkit.training import load_checkpoint  # Lightning: only when drawing from a checkpoint

    lit, config, _ = load_checkpoint(run_dir)
    return lit.model, config


def transformer_figure(out: str | os.PathLike, rows: Sequence[tuple[str, str]], path: str | os.PathLike, title: str,
                       n: int = 6, data_dir: str | None = None) -> bool:
    """Draw finished cells' transformers on the same test inputs (:func:`stnkit.viz.transformer_rows`) into ``path``.

    Args:
        out: the experiment's output folder.
        rows: ``(row label, cell key)``; cells without a checkpoint are left out.
        path: the image file.
        title: figure title.
        n: test inputs per row.
        data_dir: MNIST folder (default: each run's).

    Returns:
        Whether a figure was written (False when no cell has a checkpoint).
    """
    from stnkit.viz import load_test_images, transformer_rows

    models, images = [], None
    for label, key in rows:
        loaded = trained_model(out, key)
        if loaded is None:
            continue
        if images is None:
            images, _ = load_test_images(loaded[1], n, data_dir)
        models.append((label, loaded[0]))
    if images is None:
        return False
    transformer_rows(models, images, title).savefig(path, dpi=90)
    return True


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render a GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def val_curve(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Return a training run's validation curve from its ``logs/metrics.csv`` (and a resumed run's earlier parts).

    Returns:
        ``[{"step", "train_s", "val_err"}, ...]`` in step order (``step`` counts optimiser steps, 1-based;
        ``train_s`` is training time so far, validation excluded; plus ``st_frozen`` / ``st_blank`` where the run
        logged them); empty when the run has no log yet. A resumed run
        logs each part to a new file (``metrics.0.csv``, ``metrics.1.csv``, ... then ``metrics.csv``); a later part
        replaces whatever an earlier one logged from its first step on (a part may run past the checkpoint its
        successor resumed from).
    """
    logs = Path(run_dir) / "logs"
    parts = sorted(logs.glob("metrics.*.csv"), key=lambda p: int(p.name.split(".")[1]))
    parts += [logs / "metrics.csv"] if (logs / "metrics.csv").exists() else []
    by_step: dict[int, dict[str, float]] = {}
    for path in parts:
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get("step")]
        if not rows:
            continue
        first = min(int(row["step"]) for row in rows) + 1
        by_step = {s: v for s, v in by_step.items() if s < first}
        for row in rows:
            if row.get("val/err"):
                step = int(row["step"]) + 1
                by_step[step] = {"step": step, "train_s": float(row.get("time/train_s") or "nan"),
                                 "val_err": float(row["val/err"])}
                for name in ("st_frozen", "st_blank"):  # transformer health, where the run logged it
                    if row.get(f"val/{name}"):
                        by_step[step][name] = float(row[f"val/{name}"])
    return [by_step[s] for s in sorted(by_step)]


def st_health(cell_dir: str | os.PathLike) -> str | None:
    """Say whether a cell's transformers were working at the end of training, from its runs' validation logs.

    Reads ``val/st_frozen`` (% of transformers whose localisation net's features no longer vary over the images:
    dead units, one fixed warp) and ``val/st_blank`` (% of inputs warped to an all-zero image) of every seed's run
    (``cell_dir/s<k>``). Returns ``"alive"``, or e.g. ``"frozen from step 2,000"`` / ``"blank from step 1,000"``
    (the first validation of the final stretch in that state; seeds joined with ``"; "`` when they differ), or None
    when no run logged ``val/st_frozen`` (a model without a transformer, or a run older than that metric).
    """
    states = []
    for run_dir in sorted(p for p in Path(cell_dir).glob("s*") if p.is_dir()):
        curve = [pt for pt in val_curve(run_dir) if "st_frozen" in pt]
        if not curve:
            continue
        state = "alive"
        for name, bad in (("st_frozen", lambda v: v > 0), ("st_blank", lambda v: v > 50.0)):
            if bad(curve[-1].get(name, 0.0)):
                since = curve[-1]["step"]
                for pt in reversed(curve):
                    if not bad(pt.get(name, 0.0)):
                        break
                    since = pt["step"]
                state = f"{name[3:]} from step {since:,}"
                break
        states.append(f"{run_dir.name}: {state}")
    if not states:
        return None
    if len({s.split(": ", 1)[1] for s in states}) == 1:
        return states[0].split(": ", 1)[1]
    return "; ".join(states)
