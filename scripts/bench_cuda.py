"""CUDA warp benchmark: the Triton kernel vs eager affine_grid + grid_sample vs torch.compile of that pair.

Passes: ``fwd`` (no autograd), ``fwd+bwd`` (gradients to the input and theta), ``theta-bwd`` (gradient to theta only,
the common case of a transformer on the raw image). Prints one row per shape and pass with the times and the ratios
eager / triton and compile / triton, then the max |diff| of the Triton output against eager. Without a CUDA device
it prints "no CUDA device" and exits 0.

Usage: PYTHONPATH=src python3 scripts/bench_cuda.py [--reps 50]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = (
    ((256, 1, 42, 42), (21, 21)),
    ((256, 1, 60, 60), (30, 30)),
    ((8, 64, 56, 56), (56, 56)),
)
PASSES = ("fwd", "fwd+bwd", "theta-bwd")


def _eager_warp(x, theta, size):
    grid = F.affine_grid(theta, (x.shape[0], x.shape[1], *size), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _make_triton_warp(tw):
    class TritonWarp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, theta, size):
            matrix = torch.cat([theta, theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)], dim=1)
            ctx.save_for_backward(x, matrix)
            ctx.size = size
            return tw.warp_matrix_forward(x, matrix, size[0], size[1], 0, False, False, 1e-6)

        @staticmethod
        def backward(ctx, grad_out):
            x, matrix = ctx.saved_tensors
            gx, gm = tw.warp_matrix_backward(
                grad_out, x, matrix, *ctx.size, 0, False, False, 1e-6, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            )
            return gx, None if gm is None else gm[:, :2], None

    return TritonWarp.apply


def _timed(fn, reps):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e3  # median, ms


def _step(warp, x, theta, size, which):
    if which == "fwd":

        def forward():
            with torch.no_grad():
                warp(x, theta, size)

        return forward
    xs = x.detach().requires_grad_(which == "fwd+bwd")
    ts = theta.detach().requires_grad_(True)

    def run():
        out = warp(xs, ts, size)
        out.backward(torch.ones_like(out))

    return run


def main(argv=None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50, help="timed repetitions per case (median reported)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    from stnkit.kernels import triton_warp as tw

    triton_warp = _make_triton_warp(tw)
    compiled = torch.compile(_eager_warp)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(
        f"{'shape':>28} {'pass':>9} {'eager ms':>9} {'compile ms':>10} {'triton ms':>9} "
        f"{'eager/tri':>9} {'comp/tri':>8} {'max|diff|':>9}"
    )
    for in_shape, size in SHAPES:
        x = torch.rand(in_shape, device="cuda")
        theta = torch.eye(2, 3, device="cuda").expand(in_shape[0], 2, 3) + 0.1 * torch.randn(
            in_shape[0], 2, 3, device="cuda"
        )
        with torch.no_grad():
            diff = (triton_warp(x, theta, size) - _eager_warp(x, theta, size)).abs().max().item()
        for which in PASSES:
            t_e = _timed(_step(_eager_warp, x, theta, size, which), args.reps)
            t_c = _timed(_step(compiled, x, theta, size, which), args.reps)
            t_t = _timed(_step(triton_warp, x, theta, size, which), args.reps)
            label = "x".join(map(str, in_shape)) + "->" + "x".join(map(str, size))
            print(
                f"{label:>28} {which:>9} {t_e:9.3f} {t_c:10.3f} {t_t:9.3f} {t_e / t_t:9.2f} {t_c / t_t:8.2f} "
                f"{diff:9.2e}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
