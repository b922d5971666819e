"""stnkit.kernels: the warp and TPS-grid custom ops against torch's own ops, to second order, on every transform.

The fast path (``fast=True``: the ``stnkit::warp_matrix`` / ``stnkit::tps_grid`` ops, the analytic affine grid)
and the reference path (``fast=False``: reference grid formulas + ``F.grid_sample``) are both checked with
gradcheck and gradgradcheck; values and gradients are compared with ``F.affine_grid`` + ``F.grid_sample`` on the
SAME matrices, including torch's grid_sample groundtruths, empty inputs, NaN/Inf and deterministic mode; the op
runs under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.func.grad``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stnkit
from stnkit import kernels
from stnkit import transforms as T
from stnkit.kernels import build, ops
from stnkit.sampling import warp_checked

D64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def cpu_kernel():
    assert kernels.cpu_available(), f"C++ kernel failed to build: {kernels.build_error()}"


def _params(t: T.Transform, n: int, scale: float = 0.1, dtype=D64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(n * 31 + t.num_params)
    return t.identity()[None].to(dtype) + scale * torch.randn(n, t.num_params, dtype=dtype, generator=gen)


def _warp(x, t, p, size, padding_mode="zeros", align_corners=False, fast=True):
    return warp_checked(x, t, p, size, "bilinear", padding_mode, align_corners, fast=fast)


def _torch_warp(x, theta, size, padding_mode="zeros", align_corners=False):
    """torch's own ops: F.affine_grid + F.grid_sample of theta (N, 2, 3)."""
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=align_corners)
    return F.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners)


def _on_op(out: torch.Tensor) -> bool:
    return "stnkit_warp_matrix" in type(out.grad_fn).__name__


def _op_affine(x, theta, size, padding_mode="zeros", align_corners=False):
    """The fused op called directly with the matrices of theta (N, 6): on CPU the C++ kernel's affine branch, which
    ``warp`` leaves to the faster grid path (kernels.supports)."""
    return kernels.warp_matrix(x, T.get("affine").to_matrix(theta), size, padding_mode, align_corners)


class TestGradients:
    @pytest.mark.parametrize("name", T.available())
    @pytest.mark.parametrize("fast", [True, False])
    def test_gradcheck_and_gradgradcheck(self, name, fast):
        t = T.get(name)
        spatial = (3, 4, 5) if t.spatial_dims == 3 else (5, 6)
        size = (2, 3, 3) if t.spatial_dims == 3 else (4, 3)
        x = torch.rand(2, 2, *spatial, dtype=D64, requires_grad=True)
        p = _params(t, 2, 0.05 if name == "tps" else 0.1).requires_grad_()
        for padding_mode in ("zeros", "border"):
            def fn(x, p, padding_mode=padding_mode):
                return _warp(x, t, p, size, padding_mode, True, fast)

            assert torch.autograd.gradcheck(fn, (x, p))
            assert torch.autograd.gradgradcheck(fn, (x, p))

    @pytest.mark.parametrize("projective", [False, True])
    def test_op_gradgradcheck_matrix_only(self, projective):
        # the common training case: no input gradient; the backward's own derivative is exact
        x = torch.rand(1, 2, 5, 6, dtype=D64)
        m = torch.eye(3, dtype=D64)[None] + 0.1 * torch.randn(1, 3, 3, dtype=D64)
        if not projective:
            m[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=D64)
        m.requires_grad_()

        def fn(m):
            return kernels.warp_matrix(x, m, (4, 3), "zeros", False, projective)

        assert torch.autograd.gradcheck(fn, (m,))
        assert torch.autograd.gradgradcheck(fn, (m,))

    def test_gradient_penalty_second_order(self):
        # d/dθ of a gradient penalty (double backward): the fast path equals torch's ops
        x = torch.rand(2, 1, 9, 9, dtype=D64, requires_grad=True)
        t = T.get("affine")
        p = _params(t, 2).requires_grad_()

        def penalty(out):
            (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
            return gx.square().sum()

        (ours,) = torch.autograd.grad(penalty(_warp(x, t, p, (7, 7))), p)
        (want,) = torch.autograd.grad(penalty(_torch_warp(x, p.view(2, 2, 3), (7, 7))), p)
        torch.testing.assert_close(ours, want)

    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_func_grad_and_vmap(self, name):
        # torch.func transforms run the reference composition (they cannot enter the custom ops)
        t = T.get(name)
        x = torch.rand(2, 1, 7, 7)
        p = _params(t, 2, 0.05, torch.float32)
        got = torch.func.grad(lambda p: _warp(x, t, p, (5, 5)).square().sum())(p)
        (want,) = torch.autograd.grad(_warp(x, t, p.requires_grad_(), (5, 5)).square().sum(), p)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        batched = torch.func.vmap(lambda p: _warp(x[:1], t, p[None], (5, 5))[0])(p.detach())
        torch.testing.assert_close(batched, _warp(x[:1].expand(2, -1, -1, -1), t, p.detach(), (5, 5)))


class TestTorchGroundtruths:
    @pytest.mark.parametrize("fast", [True, False])
    def test_border_gradient_on_the_last_pixel_centre(self, fast):
        # torch's groundtruth: arange(5) rows, one sample at the bottom-right pixel centre, border padding;
        # clip_coordinates_set_grad gives the coordinate no gradient there, so d/dθ = 0 (the old kernel: -8)
        x = torch.arange(5.0).expand(1, 1, 5, 5).contiguous()
        theta = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]], requires_grad=True)
        out = stnkit.warp(x, theta, "affine", (1, 1), padding_mode="border", align_corners=True) if fast else \
            _warp(x, T.get("affine"), theta, (1, 1), "border", True, fast=False)
        assert out.item() == 4.0
        (g,) = torch.autograd.grad(out.sum(), theta)
        (want,) = torch.autograd.grad(_torch_warp(x, theta.view(1, 2, 3), (1, 1), "border", True).sum(), theta)
        assert torch.equal(want, torch.zeros_like(want))
        assert torch.equal(g, want)

    @pytest.mark.parametrize("padding_mode", ["zeros", "border"])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("shift", [0.0, 0.25, 0.5, 1.0, -1.0, 2.0])
    def test_pixel_centres_edges_and_outside(self, padding_mode, align_corners, shift):
        # samples exactly on pixel centres, pixel edges, the frame border and beyond; sizes and shifts are dyadic,
        # so every formula gives the same coordinates and even the one-sided derivatives at the kinks must agree:
        # values and both gradients of the op equal F.grid_sample on that grid, exactly (float64)
        spatial = (5, 9) if align_corners else (4, 8)
        sizes = [(5, 9), (9, 17), (3, 5), (1, 1)] if align_corners else [(4, 8), (8, 16), (2, 4), (1, 1)]
        x = torch.rand(2, 3, *spatial, dtype=D64, requires_grad=True)
        theta = torch.tensor([[1.0, 0, shift, 0, 1.0, shift / 2]] * 2, dtype=D64, requires_grad=True)
        for size in sizes:
            base = stnkit.identity_grid(size, align_corners, dtype=D64)  # (1, H, W, 2), exact dyadic values
            points = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1)  # (1, H, W, 3)
            grid = torch.einsum("nij,shwj->nhwi", theta.view(2, 2, 3), points)
            want = F.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners)
            op = _op_affine(x, theta, size, padding_mode, align_corners)
            assert _on_op(op)
            warped = stnkit.warp(x, theta, "affine", size, padding_mode=padding_mode, align_corners=align_corners)
            for out in (op, warped):
                torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
                go = torch.randn_like(out)
                wanted = torch.autograd.grad(want, (x, theta), go, retain_graph=True)
                for a, b in zip(torch.autograd.grad(out, (x, theta), go), wanted, strict=True):
                    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)

    def test_upsample_one_pixel_input(self):
        # pytorch's 1x1-input case: every sample reads the single pixel (border) or its bilinear falloff (zeros)
        x = torch.rand(1, 2, 1, 1, dtype=D64)
        theta = torch.tensor([[0.7, 0.1, 0.05, -0.2, 0.9, 0.0]], dtype=D64)
        for padding_mode in ("zeros", "border"):
            out = stnkit.warp(x, theta, "affine", (3, 4), padding_mode=padding_mode)
            torch.testing.assert_close(out, _torch_warp(x, theta.view(1, 2, 3), (3, 4), padding_mode))


class TestEmpty:
    @pytest.mark.parametrize("fast", [True, False])
    @pytest.mark.parametrize("shape", [(1, 1, 0, 5), (1, 1, 5, 0)])
    def test_empty_spatial_input_raises(self, fast, shape):
        with pytest.raises((ValueError, RuntimeError), match="non-empty spatial dimensions"):
            _warp(torch.rand(*shape), T.get("affine"), torch.eye(2, 3).reshape(1, 6), (4, 4), fast=fast)

    def test_empty_spatial_input_public_api_never_crashes(self):
        code = ("import torch, stnkit\n"
                "try:\n    stnkit.warp(torch.rand(1, 1, 0, 5), torch.eye(2, 3).reshape(1, 6), output_size=(4, 4))\n"
                "except (ValueError, RuntimeError) as e:\n    print('refused', e)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "refused" in done.stdout

    @pytest.mark.parametrize("shape", [(0, 2, 5, 5), (2, 0, 5, 5)])
    def test_empty_batch_or_channels_give_empty_output(self, shape):
        t = T.get("affine")
        p = t.identity()[None].expand(shape[0], -1)
        out = _warp(torch.rand(*shape), t, p, (3, 4))
        assert out.shape == (shape[0], shape[1], 3, 4)
        assert out.shape == _warp(torch.rand(*shape), t, p, (3, 4), fast=False).shape


class TestNonFinite:
    @pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
    @pytest.mark.parametrize("name", ["affine", "projective"])
    def test_non_finite_params_zeros_padding(self, value, name):
        t = T.get(name)
        x = torch.rand(2, 2, 6, 7, requires_grad=True)
        p = t.identity()[None].repeat(2, 1)
        p[0, 2] = value  # sample 0 diverged; sample 1 is the identity
        p.requires_grad_()
        out = _warp(x, t, p, (4, 5))
        ref = _warp(x, t, p, (4, 5), fast=False)
        assert torch.isnan(out[0]).all()
        torch.testing.assert_close(out, ref, equal_nan=True)
        go = torch.rand_like(out)
        got, want = torch.autograd.grad(out, (x, p), go), torch.autograd.grad(ref, (x, p), go)
        torch.testing.assert_close(got[0], want[0], equal_nan=True)  # the input gradient: finite
        assert torch.isnan(got[1][0]).any() == torch.isnan(want[1][0]).any()
        torch.testing.assert_close(got[1][1], want[1][1], atol=1e-4, rtol=1e-4)

    @pytest.mark.parametrize("value", [float("inf"), -float("inf")])
    def test_infinite_params_border_padding(self, value):
        t = T.get("affine")
        x = torch.rand(1, 1, 5, 5)
        p = torch.tensor([[1.0, 0, value, 0, 1.0, 0]])
        torch.testing.assert_close(_warp(x, t, p, (3, 3), "border"), _warp(x, t, p, (3, 3), "border", fast=False))

    @pytest.mark.parametrize("padding_mode", ["zeros", "border"])
    def test_inf_pixel_outside_every_footprint(self, padding_mode):
        # the taps beyond the input read as padding, never as a clamped neighbour times a zero weight
        x = torch.rand(1, 1, 6, 6)
        x[0, 0, :, 0] = float("inf")
        p = torch.tensor([[0.5, 0.0, 0.4, 0.0, 0.5, 0.0]])  # samples x in [-0.1, 0.9]: column 0 is never read
        out = _warp(x, T.get("affine"), p, (5, 5), padding_mode)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, _torch_warp(x, p.view(1, 2, 3), (5, 5), padding_mode))

    def test_inf_pixel_far_outside_zero_padding(self):
        x = torch.rand(1, 1, 4, 4)
        x[0, 0, 3, 3] = float("inf")
        p = torch.tensor([[1.0, 0.0, -5.0, 0.0, 1.0, -5.0]])  # everything far outside: pure padding
        out = _warp(x, T.get("affine"), p, (3, 3))
        assert torch.equal(out, torch.zeros_like(out))


class TestDeterministic:
    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_bit_identical_runs(self, name):
        t = T.get(name)
        x = torch.rand(4, 3, 11, 13, requires_grad=True)
        p = _params(t, 4, 0.05, torch.float32).requires_grad_()
        go = torch.rand(4, 3, 9, 10)
        with _deterministic():
            runs = []
            for _ in range(2):
                out = _warp(x, t, p, (9, 10), "border")
                runs.append((out, *torch.autograd.grad(out, (x, p), go)))
        for a, b in zip(*runs, strict=True):
            assert torch.equal(a, b)


class _deterministic:
    def __enter__(self):
        self.previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.previous)


class _Warp(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.transform = T.get(name)

    def forward(self, x, p):
        return stnkit.warp(x, p, self.transform, (5, 6))


class TestTraceable:
    @pytest.mark.parametrize("name", ["affine", "projective"])
    def test_compile_fullgraph(self, name):
        t = T.get(name)
        x = torch.rand(2, 1, 8, 9)
        p = _params(t, 2, dtype=torch.float32).requires_grad_()
        counts = {}

        def backend(gm, example_inputs):
            counts["op"] = sum("stnkit.warp_matrix" in str(n.target) for n in gm.graph.nodes)
            return gm

        module = _Warp(name)
        out = torch.compile(module, fullgraph=True, backend=backend)(x, p)
        # projective: the fused op is in the graph, not traced around; the affine family on CPU takes the grid path
        # (plain ATen ops in the graph, for Inductor to fuse), as it does eagerly
        assert counts["op"] == (1 if name == "projective" else 0)
        torch.testing.assert_close(out, module(x, p))
        (g,) = torch.autograd.grad(out.sum(), p)
        (want,) = torch.autograd.grad(module(x, p).sum(), p)
        torch.testing.assert_close(g, want)

    @pytest.mark.slow
    def test_compile_inductor(self):
        t = T.get("affine")
        x = torch.rand(2, 1, 8, 9)
        p = _params(t, 2, dtype=torch.float32).requires_grad_()
        module = _Warp("affine")
        out = torch.compile(module, fullgraph=True)(x, p)
        torch.testing.assert_close(out, module(x, p))
        (g,) = torch.autograd.grad(out.sum(), p)
        torch.testing.assert_close(g, torch.autograd.grad(module(x, p).sum(), p)[0])

    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_export(self, name):
        t = T.get(name)
        x = torch.rand(2, 1, 8, 9)
        p = _params(t, 2, 0.05, torch.float32)
        program = torch.export.export(_Warp(name), (x, p))
        targets = [str(n.target) for n in program.graph.nodes]
        assert any("stnkit.tps_grid" in t for t in targets) == (name == "tps")
        assert any("stnkit.warp_matrix" in t for t in targets) == (name == "projective")  # CPU: affine on the grid
        torch.testing.assert_close(program.module()(x, p), _Warp(name)(x, p))

    def test_fake_kernel_shapes(self):
        with torch.device("meta"):
            x, m = torch.empty(3, 2, 7, 8), torch.empty(3, 3, 3)
        out, deriv = ops.warp_matrix_op(x, m, 4, 5, 0, False, False, 1e-6, False)
        assert out.shape == (3, 2, 4, 5)
        assert deriv.numel() == 0


class TestReferenceOps:
    @pytest.mark.parametrize("projective", [False, True])
    def test_backward_op_reference_equals_autograd(self, projective):
        # the torch-op backward (devices without a kernel) against autograd through the reference composition
        x = torch.rand(2, 2, 5, 6, dtype=D64, requires_grad=True)
        m = (torch.eye(3, dtype=D64)[None] + 0.1 * torch.randn(2, 3, 3, dtype=D64)).requires_grad_()
        out = ops.reference_warp(x, m, 4, 3, 1, True, projective, 1e-6)
        go = torch.randn_like(out)
        want = torch.autograd.grad(out, (x, m), go)
        grid = ops.matrix_grid(m.detach(), 4, 3, True, projective, 1e-6)
        g_in, g_grid = torch.ops.aten.grid_sampler_2d_backward(go, x.detach(), grid, 0, 1, True, [True, True])
        torch.testing.assert_close(g_in, want[0])
        g_m = ops.matrix_grid_backward(g_grid, m.detach(), True, projective, 1e-6)
        if not projective:
            g_m[:, 2] = want[1][:, 2]  # affine matrices: the last row is constant
        torch.testing.assert_close(g_m, want[1])


class TestBuild:
    def test_manifest_detects_a_truncated_library(self, tmp_path):
        library = tmp_path / "lib.so"
        library.write_bytes(b"\x7fELF" + bytes(1000))
        build._write_atomic(build._manifest(library), json.dumps(build._fingerprint(library)).encode())
        assert build._verified(library)
        library.write_bytes(library.read_bytes()[:500])  # truncated, as by a full disk or a killed copy
        assert not build._verified(library)
        build._manifest(library).unlink()
        library.write_bytes(b"\x7fELF" + bytes(1000))
        assert not build._verified(library)  # no manifest: never loaded

    @pytest.mark.slow
    def test_truncated_cached_library_is_rebuilt(self, tmp_path):
        # a real build in a fresh cache, the library truncated, then a new process: rebuilt, never SIGBUS
        # a copy of this process's verified build, truncated, in a fresh cache; then a new process: rebuilt
        env = {**os.environ, "STNKIT_EXT_DIR": str(tmp_path)}
        env.pop("STNKIT_DISABLE_EXT", None)
        name, flags = build._variant()
        folder, _ = build._stage_sources(name, flags)
        built = build._library(folder, name)
        assert build._verified(built)
        copy = tmp_path / folder.relative_to(folder.parent.parent)
        copy.mkdir(parents=True)
        (copy / built.name).write_bytes(built.read_bytes()[:4096])
        (copy / build._manifest(built).name).write_bytes(build._manifest(built).read_bytes())
        code = ("import torch, stnkit\nfrom stnkit import kernels\nassert kernels.cpu_available(), "
                "kernels.build_error()\nx = torch.rand(1, 1, 5, 5)\n"
                "print(float(stnkit.warp(x, torch.eye(2, 3).reshape(1, 6)).sub(x).abs().max()))\n")
        again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=280)
        assert again.returncode == 0, again.stderr  # a SIGBUS would be -7
        assert again.stderr.count("stnkit: building the CPU kernel") == 1
        assert float(again.stdout.split()[-1]) < 1e-6

    def test_failed_build_warns_once_and_falls_back(self, tmp_path):
        env = {**os.environ, "STNKIT_EXT_DIR": str(tmp_path), "CXX": "/bin/false", "MAX_JOBS": "1"}
        env.pop("STNKIT_DISABLE_EXT", None)
        code = ("import torch, stnkit\nx = torch.rand(1, 1, 5, 5)\np = torch.eye(2, 3).reshape(1, 6)\n"
                "for _ in range(3):\n    out = stnkit.warp(x, p)\n"
                "torch.testing.assert_close(out, x)\nfrom stnkit import kernels\n"
                "assert not kernels.cpu_available() and kernels.build_error()\n")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=280)
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stderr.splitlines() if "CPU kernel is unavailable" in line]
        assert len(warnings) == 1, done.stderr
