"""``stnkit bench``: stnkit's warps, training steps and data generation timed side by side with the alternatives.

Run ``python -m stnkit.bench`` (or ``stnkit bench``) for the full suite, ``--quick`` for a sub-minute subset,
``--json PATH`` for the warp rows ``{"op", "shape", "pass", "baseline", "stnkit_ms", "baseline_ms", "ratio"}``
and ``--markdown PATH`` for the report. Everything runs in one process and every table compares medians of
interleaved rounds, so the ratios hold on a loaded machine even when the milliseconds do not. kornia is optional
(its baselines are skipped with a note); the training and data sections need ``stnkit.models`` / ``stnkit.data``.

Importing this package loads torch and stnkit only; the C++ extension is built (once, cached) on the first warp.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

from stnkit.files import atomic_write_text

__all__ = ["main"]


def _parse_shape(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        left, right = text.split("->")
        return tuple(int(v) for v in left.split(",")), tuple(int(v) for v in right.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like N,C,H,W->h,w; got {text!r}") from None


def _pick(flag: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma list of ``--<flag>`` values, in the given order; one line naming the unknown ones otherwise."""
    picked = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in picked if v not in allowed]
    if unknown or not picked:
        raise SystemExit(f"stnkit bench: unknown --{flag} {','.join(unknown) or repr(text)}; expected some of "
                         f"{', '.join(allowed)}")
    return picked


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stnkit bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes and short budgets (under a minute once the "
                   "C++ extension is cached)")
    p.add_argument("--json", metavar="PATH", help="write the warp rows as a JSON list")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown report")
    p.add_argument("--sections", default="warps,training,data", help="comma list of warps,training,data")
    p.add_argument("--ops", default=None, help="comma list of affine,attention,projective,tps16,tps64,affine3d "
                   "(default all; on cuda affine,attention,projective,tps16)")
    p.add_argument("--shapes", nargs="+", type=_parse_shape, default=None, metavar="N,C,H,W->h,w",
                   help="input -> output shapes instead of the defaults")
    p.add_argument("--passes", default=None, help="comma list of fwd,fwd+bwd,theta-bwd (default fwd,fwd+bwd; on "
                   "cuda all three)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the warps run (default cpu; "
                   "cuda: the warps section only, the CUDA shapes and ops by default, plus torch.compile baselines)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed rounds per comparison group")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--batch", type=int, default=None, help="batch of the training/data sections (default 256, "
                   "--quick 32)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite; returns the process exit status (0)."""
    from stnkit.bench import report, training, warps
    from stnkit.bench.timing import copy_bandwidth, load_average, machine_info

    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = set(_pick("sections", args.sections, ("warps", "training", "data")))
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("stnkit bench: --device cuda, but torch sees no CUDA device")
    if cuda and sections - {"warps"}:
        raise SystemExit("stnkit bench: --device cuda times the warps section only; pass --sections warps")
    budget = args.budget if args.budget is not None else (0.15 if args.quick else 1.2)
    ops = _pick("ops", args.ops, warps.OPS) if args.ops else (warps.CUDA_OPS if cuda else warps.OPS)
    default_shapes = warps.QUICK_SHAPES if args.quick else (warps.CUDA_SHAPES if cuda else warps.FULL_SHAPES)
    shapes = tuple(args.shapes) if args.shapes else default_shapes
    passes = _pick("passes", args.passes, warps.PASSES) if args.passes else (warps.PASSES if cuda else
                                                                             ("fwd", "fwd+bwd"))
    command = "python -m stnkit.bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else
                                                                             sys.argv[1:]))
    info = machine_info(args.device)
    bandwidth = copy_bandwidth(32 if args.quick else 256, device=args.device)
    print(f"stnkit bench: torch {info['torch']}, {info['cpu']}; copy bandwidth {bandwidth:.1f} GB/s; "
          f"load {info['load average (1/5/15 min) at start']}", flush=True)
    notes: list[str] = []
    warp_rows: list = []
    batch = args.batch or (32 if args.quick else 256)
    min_reps = 3 if args.quick else 5
    if "warps" in sections:
        print("warps (median ms, x = baseline / stnkit):", flush=True)
        warp_rows = warps.run_warps(shapes, ops, passes, bandwidth, budget, notes, min_reps=min_reps,
                                    device=args.device)
    steps = data = None
    if "training" in sections:
        if training.available("stnkit.models"):
            print("training steps:", flush=True)
            quick = args.quick
            steps = training.run_training(("st-cnn",) if quick else ("st-fcn", "st-cnn"),
                                          ("affine",) if quick else ("affine", "projective", "tps"),
                                          ("rts",) if quick else ("r", "rts"), budget * 2, batch=batch,
                                          min_reps=min_reps)
        else:
            notes.append("stnkit.models is not in this checkout: training-step section not run")
    if "data" in sections:
        if training.available("stnkit.data") and training.available("stnkit.models"):
            print("data generation vs consumption:", flush=True)
            data = training.run_data(("rts",) if args.quick else ("r", "rts", "p", "e", "tc"), budget * 2,
                                     batch=batch, min_reps=min_reps)
        else:
            notes.append("stnkit.data / stnkit.models not in this checkout: data-rate section not run")
    info["load average (1/5/15 min) at end"] = load_average()
    text = report.markdown(info, command, bandwidth, warp_rows, steps, data, notes, device=args.device)
    print()
    print(text)
    if args.json:
        atomic_write_text(args.json, json.dumps([r.row() for r in warp_rows], indent=1) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    return 0
