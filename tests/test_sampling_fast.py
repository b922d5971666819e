"""The fused warp op (stnkit.kernels) through ``warp`` against the reference path (``fast=False``), and its dispatch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import stnkit
from stnkit import kernels
from stnkit import transforms as T
from stnkit.kernels import build
from stnkit.sampling import sample, warp_checked

TRANSFORMS = ["affine", "attention", "similarity", "translation", "projective"]


@pytest.fixture(scope="module")
def ext():
    # the dev environment has a compiler and ninja (both in the test command's setup), so the kernel must build
    # here; a failure to build is a test failure, not a skip (users without a compiler get the reference path,
    # which TestFallback covers)
    assert kernels.cpu_available(), f"C++ kernel failed to build: {kernels.build_error()}"


def _params(t: T.Transform, n: int, dtype: torch.dtype, scale: float = 0.2) -> torch.Tensor:
    return t.identity()[None].to(dtype) + scale * torch.randn(n, t.num_params, dtype=dtype)


def _warp(x, t, p, size, mode, padding_mode, align_corners, fast=True):
    return warp_checked(x, t, p, size, mode, padding_mode, align_corners, fast=fast)


def _reference(x, t, p, size, padding_mode, align_corners):
    return _warp(x, t, p, size, "bilinear", padding_mode, align_corners, fast=False)


def _is_fused(out: torch.Tensor) -> bool:
    fn = out.grad_fn
    while fn is not None and "ToCopy" in type(fn).__name__:  # dtype casts around the fused op
        fn = fn.next_functions[0][0]
    return fn is not None and "stnkit_warp_matrix" in type(fn).__name__


@pytest.mark.usefixtures("ext")
class TestFusedWarp:
    @pytest.mark.parametrize("name", TRANSFORMS)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border"])
    @pytest.mark.parametrize(("n", "c", "in_size", "out_size"),
                             [(3, 2, (9, 11), (7, 13)), (1, 1, (5, 5), (5, 5)), (2, 20, (6, 7), (3, 70))])
    @pytest.mark.parametrize("input_grad", [True, False])
    def test_matches_reference(self, name, dtype, align_corners, padding_mode, n, c, in_size, out_size, input_grad):
        t = T.get(name)
        x = torch.rand(n, c, *in_size, dtype=dtype, requires_grad=input_grad)
        p = _params(t, n, dtype).requires_grad_()
        out = _warp(x, t, p, out_size, "bilinear", padding_mode, align_corners)
        assert _is_fused(out) == (name == "projective")  # CPU: the affine family is faster on the grid path
        ref = _reference(x, t, p, out_size, padding_mode, align_corners)
        f32 = dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-5 if f32 else 1e-12, rtol=1e-5 if f32 else 1e-12)
        go = torch.randn_like(out)
        inputs = (x, p) if input_grad else (p,)
        got = torch.autograd.grad(out, inputs, go)
        want = torch.autograd.grad(ref, inputs, go)
        for a, b in zip(got, want):
            if f32:  # float32 coordinates may round across a pixel edge, where d out / d coordinate jumps
                assert float((a - b).abs().max()) <= 5e-3 * max(1.0, float(b.abs().max()))
            else:
                torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)

    @pytest.mark.parametrize("name", ["affine", "projective"])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border"])
    def test_gradcheck(self, name, padding_mode):
        t = T.get(name)
        x = torch.rand(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        p = _params(t, 2, torch.float64, 0.1).requires_grad_()
        assert torch.autograd.gradcheck(lambda x, p: _warp(x, t, p, (4, 3), "bilinear", padding_mode, True), (x, p))

    @pytest.mark.parametrize("name", ["affine", "projective"])
    def test_row_independent_of_batch(self, name):
        t = T.get(name)
        x = torch.rand(6, 2, 11, 13)
        p = _params(t, 6, torch.float32)
        batch = _warp(x, t, p, (9, 10), "bilinear", "zeros", False)
        for i in (0, 5):
            assert torch.equal(_warp(x[i:i + 1], t, p[i:i + 1], (9, 10), "bilinear", "zeros", False)[0], batch[i])

    def test_identity(self):
        x = torch.rand(2, 3, 8, 9)
        out = stnkit.warp(x, torch.eye(2, 3).expand(2, 2, 3).reshape(2, 6), "affine")
        torch.testing.assert_close(out, x, atol=1e-6, rtol=1e-6)

    def test_far_outside_and_degenerate_projective(self):
        x = torch.rand(2, 1, 6, 6)
        p = torch.tensor([[1.0, 0, 50, 0, 1, 0, 0, 0], [1.0, 0, 0, 0, 1, 0, 2.0, 0]])  # far shift; w = 0 inside
        t = T.get("projective")
        out = _warp(x, t, p, (7, 7), "bilinear", "zeros", False)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, _reference(x, t, p, (7, 7), "zeros", False), atol=1e-5, rtol=1e-5)

    def test_low_precision_input_keeps_dtype(self):
        x = torch.rand(2, 1, 6, 6).to(torch.bfloat16)
        p = _params(T.get("affine"), 2, torch.float32)
        out = stnkit.warp(x, p, "affine", (5, 5))
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), _reference(x, T.get("affine"), p, (5, 5), "zeros", False).float())

    def test_spatial_transformer_uses_fused_path(self):
        st = stnkit.SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), "projective", in_features=4)
        x = torch.rand(2, 1, 8, 8)
        out = st(x)
        assert _is_fused(out)
        out.sum().backward()
        assert st.head.bias.grad is not None
        assert torch.isfinite(st.head.bias.grad).all()


class TestFallback:
    @pytest.mark.parametrize(("mode", "padding_mode"), [("nearest", "zeros"), ("bicubic", "zeros"),
                                                          ("bilinear", "reflection")])
    def test_other_modes_use_reference(self, mode, padding_mode):
        t = T.get("affine")
        x = torch.rand(2, 2, 7, 8)
        p = _params(t, 2, torch.float32).requires_grad_()
        out = stnkit.warp(x, p, t, (5, 6), mode=mode, padding_mode=padding_mode)
        assert not _is_fused(out)
        ref = sample(x, t.grid(p, (5, 6), False), mode, padding_mode, False)
        torch.testing.assert_close(out, ref)

    @pytest.mark.parametrize("name", ["tps", "affine3d"])
    def test_other_transforms_use_reference(self, name):
        t = T.get(name)
        x = torch.rand(2, 1, *((5, 6, 7) if name == "affine3d" else (6, 7)))
        p = _params(t, 2, torch.float32, 0.05).requires_grad_()
        assert not _is_fused(stnkit.warp(x, p, t))

    def test_reference_path_by_argument(self):
        t = T.get("affine")
        x = torch.rand(2, 1, 6, 7)
        p = _params(t, 2, torch.float32, 0.05).requires_grad_()
        out = _warp(x, t, p, (4, 5), "bilinear", "zeros", False, fast=False)
        assert not _is_fused(out)
        assert "AffineGridFn" not in str(out.grad_fn.next_functions)  # reference grid: autograd broadcast ops

    def test_kernel_unavailable_uses_reference(self):
        # a process where the kernel cannot be used (here: disabled) warps on the reference path, same values
        code = (
            "import torch, stnkit; from stnkit import kernels; from stnkit.sampling import warp_checked\n"
            "t = stnkit.transforms.get('projective'); x = torch.rand(2, 1, 6, 7)\n"
            "p = t.identity()[None] + 0.05 * torch.randn(2, 8)\n"
            "out = stnkit.warp(x, p, t, (4, 5))\n"
            "ref = warp_checked(x, t, p, (4, 5), 'bilinear', 'zeros', False, fast=False)\n"
            "torch.testing.assert_close(out, ref)\n"
            "assert not kernels.cpu_available() and 'STNKIT_DISABLE_EXT' in kernels.build_error()\n"
        )
        env = {**os.environ, "STNKIT_DISABLE_EXT": "1"}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)

    def test_autocast_keeps_float32_coordinates(self):
        t = T.get("affine")
        x = torch.rand(2, 1, 6, 7)
        p = _params(t, 2, torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = stnkit.warp(x, p, t, (5, 5))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, _reference(x, t, p, (5, 5), "zeros", False))

    def test_import_builds_nothing(self):
        import subprocess
        import sys

        code = ("import sys, stnkit; from stnkit import kernels; "
                "assert 'torch.utils.cpp_extension' not in sys.modules; assert kernels.build_error() is None")
        subprocess.run([sys.executable, "-c", code], check=True)


def test_build_folder_is_keyed_by_source_content(tmp_path):
    """Checkouts of the same code share one build; other flags get their own."""
    env = {**os.environ, "STNKIT_EXT_DIR": str(tmp_path)}
    code = ("from stnkit.kernels import build; a, s = build._stage_sources('m', ['-O3']); "
            "b, _ = build._stage_sources('m', ['-O3']); c, _ = build._stage_sources('m', ['-O2']); "
            "assert a == b != c; print(a); print(*s)")
    lines = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True,
                           timeout=60).stdout.splitlines()
    assert lines[0].startswith(str(tmp_path))
    for staged in lines[1].split():
        original = os.path.join(os.path.dirname(build.__file__), os.path.basename(staged))
        with open(staged, "rb") as a, open(original, "rb") as b:
            assert a.read() == b.read()


def test_killed_build_lock_does_not_hang_later_loads(ext):
    """A torch build lock left by a process killed mid-build must not block the next process forever (it did: CI)."""
    name, flags = build._variant()
    folder, _ = build._stage_sources(name, flags)
    (folder / "lock").touch()  # what a process killed inside cpp_extension.load leaves behind
    code = "from stnkit.kernels import build; m = build.load(); assert m is not None, build.build_error()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert not (folder / "lock").exists()


def test_build_lock_is_released_when_its_holder_dies(tmp_path):
    """The OS lock around a build is freed by the kernel when the process holding it is killed."""
    import threading

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib; from stnkit.kernels import build\n"
            f"with build._exclusive(pathlib.Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        acquired = threading.Event()

        def take() -> None:
            with build._exclusive(tmp_path):
                acquired.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not acquired.wait(1.0), "the lock was taken while another live process held it"
        holder.kill()
        assert acquired.wait(30.0), "the lock was not released when its holder was killed"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
