"""Collect a recipe sweep's ``*.json`` (``recipes_sweep.py``) into ``summary.csv`` and draw ``curves.png``.

``summary.csv`` has one row per validation (error vs steps, samples and time); ``curves.png`` shows validation
error vs training samples and vs training minutes of every recipe tried. Runs from the committed JSON files only.

    python scripts/analysis/recipes_summarize.py [--runs results/recipes] [--out results/recipes]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from common import RESULTS, existing_dir

from stnkit.files import atomic_write_text
from stnkit.viz import error_curves_side_by_side


def rows_of(run: dict) -> list[dict]:
    """One CSV row per validation of a sweep result."""
    rec = run["recipe"]
    return [{"run": run["name"], "model": run["model"], "optimizer": rec["optimizer"], "lr": rec["lr"],
             "momentum": rec["momentum"], "scheduler": rec["scheduler"], "batch_size": rec["batch_size"],
             "loc_lr_scale": rec["loc_lr_scale"], "total_steps": rec["steps"], "step": c["step"],
             "samples": c["step"] * rec["batch_size"], "train_s": round(c["train_s"], 1),
             "val_err": round(c["val_err"], 2), "threads": run.get("cpu_threads"),
             "load_before": round(run["load_before"], 2), "load_after": round(run["load_after"], 2)}
            for c in run["curve"]]


def main(argv: list[str] | None = None) -> None:
    """Write summary.csv and curves.png; print one line per run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=existing_dir, default=RESULTS / "recipes", help="folder of the sweep's JSON files")
    p.add_argument("--out", type=existing_dir, default=RESULTS / "recipes", help="folder of summary.csv, curves.png")
    args = p.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in sorted(Path(args.runs).glob("*.json"))]
    if not runs:
        raise SystemExit(f"no sweep results (*.json) in {args.runs}")
    rows = [row for r in runs for row in rows_of(r)]
    for r in runs:
        m = r["metrics"]
        print(f"{r['name']:36s} test {m['test_err']:5.2f} %  val {m['val_err']:5.2f} %  {m['steps']:5d} steps  "
              f"{m['train_s']:6.0f} s  load {r['load_before']:.1f}->{r['load_after']:.1f}")
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(Path(args.out, "summary.csv"), table.getvalue())
    series = [{"label": f"{r['model']} {r['name'].removeprefix('cnn-')} ({r.get('cpu_threads')} thr, load "
                        f"{r['load_before']:.0f}-{r['load_after']:.0f})",
               "curve": [{**c, "samples": c["step"] * r["recipe"]["batch_size"]} for c in r["curve"]],
               "test_err": r["metrics"]["test_err"]} for r in runs]
    fig = error_curves_side_by_side(series, "RTS MNIST, the recipes tried (star: test error; the paper: ST-CNN "
                                    "0.5 %, CNN 0.8 %); seconds depend on the machine's load, samples do not")
    fig.savefig(Path(args.out, "curves.png"), dpi=80)


if __name__ == "__main__":
    main()
