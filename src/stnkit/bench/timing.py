"""Side-by-side timing: interleaved repeats, medians, copy bandwidth and a machine/version summary.

Every callable of a group runs once per round, in a rotating order, so load from other processes (this suite is
meant to run on shared machines) hits all of them alike; the ratio of two medians from the same rounds is the
robust number, the absolute milliseconds less so.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["copy_bandwidth", "interleaved", "load_average", "machine_info"]


def interleaved(
    fns: Mapping[str, Callable[[], object]], *, budget_s: float = 1.0, min_reps: int = 5, max_reps: int = 30,
    warmup: int = 2,
) -> dict[str, float]:
    """Time callables side by side and return each one's median in milliseconds.

    Args:
        fns: name -> zero-argument callable (one forward or forward+backward).
        budget_s: wall-clock target of the timed rounds; the number of rounds is ``budget_s`` divided by the
            slowest callable's warm-up time, clamped to ``[min_reps, max_reps]``.
        min_reps: fewest timed rounds.
        max_reps: most timed rounds.
        warmup: untimed calls per callable first (builds caches, the C++ extension, autotuning).

    Returns:
        name -> median milliseconds over the same rounds.
    """
    slowest = 0.0
    for fn in fns.values():
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            fn()
            slowest = max(slowest, time.perf_counter() - t0)
    reps = int(min(max_reps, max(min_reps, budget_s / max(slowest * len(fns), 1e-6))))
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:  # rotate who runs first
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def copy_bandwidth(megabytes: int = 128, reps: int = 5, device: str = "cpu") -> float:
    """Return the measured copy bandwidth in GB/s (bytes read + written per second, best of ``reps``).

    The buffer is larger than a typical last-level cache, so this is the DRAM (or GPU memory) streaming rate with
    torch's current thread count: the rate the memory-bandwidth lower bounds of the warp table divide by.
    """
    n = megabytes * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if src.device.type == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(reps + 1):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


def load_average() -> str:
    """Return the 1/5/15-minute load averages, or "n/a" where the OS does not report them."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, str]:
    """Return the machine and library versions the numbers belong to (and the GPU's, for ``device="cuda"``)."""
    try:
        import kornia

        kornia_version = kornia.__version__
    except ImportError:
        kornia_version = "not installed"
    from stnkit import __version__, kernels

    ext = "loaded" if kernels.cpu_available() else f"unavailable ({kernels.build_error()})"
    capability = ""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - informational only
        capability = "?"
    gpu = {}
    if device == "cuda":
        try:
            import triton

            triton_version = triton.__version__
        except ImportError:
            triton_version = "not installed (stnkit runs its reference path on CUDA)"
        gpu = {"gpu": f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})", "triton": triton_version}
    return {
        **gpu,
        "cpu": f"{_cpu_name()} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, "
               f"ATen CPU capability {capability})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "kornia": kornia_version,
        "stnkit": __version__,
        "stnkit C++ extension": ext,
        "load average (1/5/15 min) at start": load_average(),
    }
