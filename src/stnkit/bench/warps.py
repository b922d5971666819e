"""The warp table: stnkit's ``warp`` against each alternative, per op, shape and pass, in one process.

Ops: ``affine``, ``attention``, ``projective``, ``tps16``, ``tps64`` (2-D shapes) and ``affine3d`` (3-D shapes).
Passes: ``fwd`` (no autograd), ``fwd+bwd`` (gradients to the input *and* the parameters, as in training an
ST layer that is not the first layer) and ``theta-bwd`` (forward and the gradient to the parameters only: a
transformer on the raw image, the common case). On CUDA (``device="cuda"``) every call ends in a synchronisation,
and the matrix ops are also timed against ``torch.compile`` of the eager pair. Every case is run at
``align_corners=True``, the frame kornia's matrix warps use, so stnkit, eager and kornia compute the same output
(checked, column ``max |diff|``).

Memory-bandwidth lower bound per case: the bytes that must move (fwd: read the input, write the output; fwd+bwd:
that, plus read the output gradient, read the input again and write its gradient: ``3 in + 2 out``; theta-bwd:
``2 in + 2 out``; float32)
divided by the measured copy bandwidth. ``stnkit / bound`` says how far the fastest path is from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import stnkit
from stnkit.bench.baselines import kornia_available, make_baseline
from stnkit.bench.timing import interleaved
from stnkit.transforms import ThinPlateSpline

__all__ = ["CUDA_OPS", "CUDA_SHAPES", "FULL_SHAPES", "OPS", "PASSES", "QUICK_SHAPES", "WarpResult", "run_warps"]

OPS = ("affine", "attention", "projective", "tps16", "tps64", "affine3d")
Shape = tuple[tuple[int, ...], tuple[int, ...]]  # (input (N, C, *spatial), output spatial size)
FULL_SHAPES: tuple[Shape, ...] = (
    ((256, 1, 28, 28), (28, 28)),
    ((256, 1, 60, 60), (60, 60)),
    ((256, 1, 60, 60), (30, 30)),
    ((8, 64, 56, 56), (56, 56)),
    ((64, 3, 64, 64), (64, 64)),
    ((32, 3, 224, 224), (224, 224)),
    ((8, 1, 32, 32, 32), (32, 32, 32)),
)
QUICK_SHAPES: tuple[Shape, ...] = (
    ((256, 1, 28, 28), (28, 28)),
    ((8, 64, 56, 56), (56, 56)),
    ((2, 1, 16, 16, 16), (16, 16, 16)),
)
#: the CUDA rows' defaults: the paper's attention shapes and a feature-map transformer (issue 14's goals)
CUDA_SHAPES: tuple[Shape, ...] = (
    ((256, 1, 42, 42), (21, 21)),
    ((256, 1, 60, 60), (30, 30)),
    ((8, 64, 56, 56), (56, 56)),
)
BASELINES = {
    "affine": ("eager", "kornia", "sampler only", "stnkit unfused"),
    "attention": ("eager", "kornia", "stnkit unfused"),
    "projective": ("kornia", "eager", "stnkit unfused"),
    "tps16": ("tps-plain", "tps-solve", "kornia", "stnkit affine"),
    "tps64": ("tps-plain", "tps-solve", "kornia", "stnkit affine"),
    "affine3d": ("eager", "sampler only"),
}
# kornia's TPS materialises (N, H*W, K) distances and products; above this many elements one call takes seconds
_KORNIA_TPS_MAX = 32_000_000
ALIGN_CORNERS = True
PASSES = ("fwd", "fwd+bwd", "theta-bwd")
CUDA_OPS = ("affine", "attention", "projective", "tps16")
#: extra baselines on CUDA (Inductor's fused grid + sample is the strongest alternative there)
CUDA_BASELINES = {"affine": ("compile",), "attention": ("compile",), "projective": ("compile",)}


@dataclass
class WarpResult:
    """One (op, shape, pass, baseline) comparison, times in ms (medians of the same interleaved rounds)."""

    op: str
    shape: str
    pass_: str
    baseline: str
    stnkit_ms: float
    baseline_ms: float
    bound_ms: float
    max_diff: float | None

    @property
    def ratio(self) -> float:
        """baseline_ms / stnkit_ms: how many times faster stnkit is."""
        return self.baseline_ms / self.stnkit_ms

    def row(self) -> dict:
        """The JSON row: exactly op, shape, pass, baseline, stnkit_ms, baseline_ms, ratio."""
        return {"op": self.op, "shape": self.shape, "pass": self.pass_, "baseline": self.baseline,
                "stnkit_ms": round(self.stnkit_ms, 4), "baseline_ms": round(self.baseline_ms, 4),
                "ratio": float(f"{self.ratio:.4g}")}  # 4 significant digits: small ratios keep theirs


def shape_str(in_shape: tuple[int, ...], out_size: tuple[int, ...]) -> str:
    """Format ``"N,C,H,W->h,w"``."""
    return ",".join(map(str, in_shape)) + "->" + ",".join(map(str, out_size))


def _params(op: str, n: int, gen: torch.Generator, tps: ThinPlateSpline | None) -> torch.Tensor:
    """Random near-identity parameters (N, P) of an op, as stnkit's transforms take them."""
    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    if op in ("affine", "affine3d"):
        k = 2 if op == "affine" else 3
        return (torch.eye(k, k + 1) + 0.1 * noise(n, k, k + 1)).reshape(n, -1)
    if op == "attention":
        return torch.stack([0.8 + 0.2 * torch.rand(n, generator=gen), 0.1 * noise(n), 0.1 * noise(n)], dim=1)
    if op == "projective":
        return torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0]) + 0.05 * noise(n, 8)
    if tps is None:
        raise ValueError(f"unknown op {op!r}")
    return tps.control_points.float().reshape(1, -1) + 0.05 * noise(n, tps.num_params)


def _stnkit(op: str, out_size: tuple[int, ...], tps: ThinPlateSpline | None) -> Callable:
    transform: str | ThinPlateSpline = op
    if op.startswith("tps"):
        assert tps is not None, f"op {op!r} needs its ThinPlateSpline"
        transform = tps
    return lambda x, p: stnkit.warp(x, p, transform, out_size, align_corners=ALIGN_CORNERS)


def _unfused(op: str, out_size: tuple[int, ...]) -> Callable:
    """Return stnkit's warp without the fused kernel: its grid (analytic backward) + ``F.grid_sample``."""
    transform = stnkit.transforms.get(op)
    return lambda x, p: F.grid_sample(x, transform.grid(p, out_size, ALIGN_CORNERS), align_corners=ALIGN_CORNERS)


def _bound_ms(in_numel: int, out_numel: int, pass_: str, bandwidth_gbs: float) -> float:
    moved = {"fwd": 4 * (in_numel + out_numel), "theta-bwd": 4 * (2 * in_numel + 2 * out_numel)}.get(
        pass_, 4 * (3 * in_numel + 2 * out_numel))
    return moved / (bandwidth_gbs * 1e9) * 1e3


def _wrap(fn: Callable, x: torch.Tensor, p: torch.Tensor, pass_: str, go: torch.Tensor | None) -> Callable:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    if pass_ == "fwd":
        def fwd() -> None:
            with torch.no_grad():
                fn(x, p)
            sync()
        return fwd
    xg, pg = x.detach().requires_grad_(pass_ == "fwd+bwd"), p.detach().requires_grad_()

    def fwd_bwd() -> None:
        xg.grad = pg.grad = None  # fresh gradients every call (no accumulation), to every leaf that needs one
        fn(xg, pg).backward(go)
        sync()
    return fwd_bwd


def run_case(
    op: str, in_shape: tuple[int, ...], out_size: tuple[int, ...], pass_: str, bandwidth_gbs: float,
    budget_s: float, notes: list[str], seed: int = 0, min_reps: int = 5, device: str = "cpu",
) -> list[WarpResult]:
    """Time stnkit and every available baseline of one case side by side; return one result per baseline."""
    gen = torch.Generator().manual_seed(seed)
    tps = ThinPlateSpline(grid_size=4 if op == "tps16" else 8) if op.startswith("tps") else None
    n, spatial = in_shape[0], in_shape[2:]
    x = torch.rand(*in_shape, generator=gen).to(device)
    p = _params(op, n, gen, tps).to(device)
    affine_p = _params("affine", n, gen, None).to(device)
    fns: dict[str, Callable] = {"stnkit": _stnkit(op, out_size, tps)}
    names = BASELINES[op] + (CUDA_BASELINES.get(op, ()) if x.device.type == "cuda" else ())
    for name in names:
        if name == "stnkit affine":
            fns[name] = _stnkit("affine", out_size, None)
            continue
        if name == "stnkit unfused":
            fns[name] = _unfused(op, out_size)
            continue
        if name == "kornia" and not kornia_available():
            notes.append(f"kornia not installed: skipped the kornia baseline of {op}")
            continue
        if name == "kornia" and op.startswith("tps"):
            k = tps.num_control_points if tps is not None else 0
            if tuple(spatial) != tuple(out_size):
                notes.append(f"kornia warp_image_tps keeps the input size: no kornia row for {op} "
                             f"{shape_str(in_shape, out_size)}")
                continue
            if n * out_size[0] * out_size[1] * k > _KORNIA_TPS_MAX:
                notes.append(f"kornia TPS skipped at {shape_str(in_shape, out_size)}, {op} (its (N, H*W, K) "
                             f"intermediates make one call take seconds)")
                continue
        fns[name] = make_baseline(name, op, tuple(spatial), tuple(out_size), ALIGN_CORNERS, tps, x.device)
    with torch.no_grad():
        outs = {k: f(x, affine_p if k == "stnkit affine" else p) for k, f in fns.items()}
    go = None if pass_ == "fwd" else torch.randn(outs["stnkit"].shape, generator=gen).to(device)
    timed = {k: _wrap(f, x, affine_p if k == "stnkit affine" else p, pass_, go) for k, f in fns.items()}
    ms = interleaved(timed, budget_s=budget_s, min_reps=min_reps)
    bound = _bound_ms(x.numel(), outs["stnkit"].numel(), pass_, bandwidth_gbs)
    results = []
    for name in fns:
        if name == "stnkit":
            continue
        diff = None if name == "stnkit affine" else float((outs[name] - outs["stnkit"]).abs().max())
        results.append(WarpResult(op, shape_str(in_shape, out_size), pass_, name, ms["stnkit"], ms[name], bound,
                                  diff))
    return results


def run_warps(
    shapes: tuple[Shape, ...], ops: tuple[str, ...], passes: tuple[str, ...], bandwidth_gbs: float,
    budget_s: float, notes: list[str], log: Callable[[str], None] = print, min_reps: int = 5, device: str = "cpu",
) -> list[WarpResult]:
    """Run every (op, shape, pass) case that applies (3-D ops on 3-D shapes, 2-D ops on 2-D shapes)."""
    results: list[WarpResult] = []
    for in_shape, out_size in shapes:
        for op in ops:
            if (op == "affine3d") != (len(out_size) == 3):
                continue
            for pass_ in passes:
                case = run_case(op, in_shape, out_size, pass_, bandwidth_gbs, budget_s, notes, min_reps=min_reps,
                                device=device)
                for r in case:
                    log(f"  {r.op:10s} {r.shape:26s} {r.pass_:8s} stnkit {r.stnkit_ms:9.3f} ms  {r.baseline:13s} "
                        f"{r.baseline_ms:9.3f} ms  x{r.ratio:.2f}")
                results.extend(case)
    return results
