"""Collect results/recipes/*.json into summary.csv (one row per validation: error vs steps, samples and time)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Write summary.csv and print one line per run."""
    rows = []
    for path in sorted(HERE.glob("*.json")):
        r = json.loads(path.read_text())
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


if __name__ == "__main__":
    main()
