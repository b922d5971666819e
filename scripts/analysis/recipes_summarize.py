"""Collect results/recipes/*.json into summary.csv and draw curves.png.

summary.csv has one row per validation (error vs steps, samples and time); curves.png shows validation error vs
training samples and vs training minutes of every recipe tried.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Write summary.csv and print one line per run."""
    rows, runs = [], []
    for path in sorted(HERE.glob("*.json")):
        r = json.loads(path.read_text())
        runs.append(r)
        rec, m = r["recipe"], r["metrics"]
        for c in r["curve"]:
            rows.append({
                "run": r["name"], "model": r["model"], "optimizer": rec["optimizer"], "lr": rec["lr"],
                "momentum": rec["momentum"], "scheduler": rec["scheduler"], "batch_size": rec["batch_size"],
                "loc_lr_scale": rec["loc_lr_scale"], "total_steps": rec["steps"], "step": c["step"],
                "samples": c["step"] * rec["batch_size"], "train_s": round(c["train_s"], 1),
                "val_err": round(c["val_err"], 2), "threads": r.get("cpu_threads"),
                "load_before": round(r["load_before"], 2), "load_after": round(r["load_after"], 2),
            })
        print(f"{r['name']:36s} test {m['test_err']:5.2f} %  val {m['val_err']:5.2f} %  {m['steps']:5d} steps  "
              f"{m['train_s']:6.0f} s  load {r['load_before']:.1f}->{r['load_after']:.1f}")
    with open(HERE / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(runs)


def plot(runs: list[dict]) -> None:
    """Write curves.png: error vs samples (load-independent) beside error vs training minutes (load-dependent)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from stnkit.viz import error_curves

    cmap = colormaps["tab20"]
    fig = Figure(figsize=(16, 6), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.45])
    for sub, x in ((left, "samples"), (right, "train_s")):
        series = [{"label": f"{r['model']} {r['name'].removeprefix('cnn-')} ({r.get('cpu_threads')} thr, load "
                            f"{r['load_before']:.0f}-{r['load_after']:.0f})",
                   "curve": [{**c, "samples": c["step"] * r["recipe"]["batch_size"]} for c in r["curve"]],
                   "test_err": r["metrics"]["test_err"], "color": cmap(i % 20)} for i, r in enumerate(runs)]
        error_curves(series, f"validation error vs training {'samples' if x == 'samples' else 'time'}", x=x,
                     figure=sub, legend=False)
    fig.suptitle("RTS MNIST, the recipes tried (star: test error; the paper: ST-CNN 0.5 %, CNN 0.8 %); seconds "
                 "depend on the machine's load, samples do not")
    handles, labels = right.axes[0].get_legend_handles_labels()
    right.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.savefig(HERE / "curves.png", dpi=80)


if __name__ == "__main__":
    main()
