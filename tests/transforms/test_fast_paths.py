"""Fast grid paths (analytic affine backward, the TPS grid op) against the reference formulas (``grid(fast=False)``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stnkit
from stnkit.transforms import Affine, Affine3D, ThinPlateSpline, affine_grid, affine_grid3d

SIZES_2D = [(5, 7), (1, 1), (1, 6), (9, 1), (13, 11)]
SIZES_3D = [(3, 4, 5), (1, 1, 1), (2, 1, 7)]


def _affine_grid_fast(theta, size, align_corners):
    return (affine_grid if len(size) == 2 else affine_grid3d)(theta, size, align_corners=align_corners)


def _affine_grid_reference(theta, size, align_corners):
    t = Affine() if len(size) == 2 else Affine3D()
    return t.grid(theta.reshape(theta.shape[0], -1), size, align_corners, fast=False)


def _theta(n, size, dtype):
    k = len(size)
    return torch.eye(k, k + 1, dtype=dtype) + 0.3 * torch.randn(n, k, k + 1, dtype=dtype)


class TestAffineGridFast:
    @pytest.mark.parametrize("size", SIZES_2D + SIZES_3D)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("n", [1, 3])
    def test_matches_reference(self, size, align_corners, dtype, n):
        theta = _theta(n, size, dtype).requires_grad_()
        fast = _affine_grid_fast(theta, size, align_corners)
        ref = _affine_grid_reference(theta, size, align_corners)
        tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
        torch.testing.assert_close(fast, ref, **tol)
        grad = torch.randn_like(fast)
        (g_fast,) = torch.autograd.grad(fast, theta, grad)
        (g_ref,) = torch.autograd.grad(ref, theta, grad)
        scale = {"atol": 1e-4 * max(1.0, float(g_ref.abs().max())), "rtol": 1e-4} if dtype == torch.float32 else tol
        torch.testing.assert_close(g_fast, g_ref, **scale)

    @pytest.mark.parametrize("size", [(3, 5), (1, 4), (2, 2, 3)])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_gradcheck(self, size, align_corners):
        theta = _theta(1, size, torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: _affine_grid_fast(t, size, align_corners), (theta,))
        assert torch.autograd.gradgradcheck(lambda t: _affine_grid_fast(t, size, align_corners), (theta,))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_torch(self, align_corners):
        theta = _theta(4, (7, 9), torch.float32).requires_grad_()
        ours = affine_grid(theta, (7, 9), align_corners=align_corners)
        torch_grid = F.affine_grid(theta, [4, 1, 7, 9], align_corners=align_corners)
        torch.testing.assert_close(ours, torch_grid, atol=1e-6, rtol=1e-5)
        theta3 = _theta(2, (3, 4, 5), torch.float32)
        torch.testing.assert_close(affine_grid3d(theta3, (3, 4, 5), align_corners=align_corners),
                                   F.affine_grid(theta3, [2, 1, 3, 4, 5], align_corners=align_corners),
                                   atol=1e-6, rtol=1e-5)

    @pytest.mark.parametrize("size", [(28, 28), (6, 4, 5)])
    def test_identity_exact(self, size):
        k = len(size)
        eye = torch.eye(k, k + 1)[None]
        torch.testing.assert_close(_affine_grid_fast(eye, size, False), stnkit.identity_grid(size), atol=0, rtol=0)

    def test_public_api_uses_fast_path(self):
        theta = _theta(2, (4, 5), torch.float32).requires_grad_()
        assert "AffineGridFn" in type(affine_grid(theta, (4, 5)).grad_fn).__name__
        params = torch.randn(2, 3, requires_grad=True)
        grid = stnkit.Attention().grid(params, (4, 5))
        assert grid.shape == (2, 4, 5, 2)
        grid.sum().backward()
        assert params.grad is not None
        assert params.grad.abs().sum() > 0

    def test_grad_reduction_matches_base_grid(self):
        # the separable reduction equals the explicit sum over a materialised base grid
        size = (6, 7)
        grad = torch.randn(3, *size, 2, dtype=torch.float64)
        base = stnkit.identity_grid(size, dtype=torch.float64)  # (1, H, W, 2)
        base_h = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1)  # (1, H, W, 3)
        explicit = torch.einsum("nhwi,hwj->nij", grad, base_h[0])
        theta = _theta(3, size, torch.float64).requires_grad_()
        (analytic,) = torch.autograd.grad(affine_grid(theta, size), theta, grad)
        torch.testing.assert_close(analytic, explicit)

    @pytest.mark.parametrize("size", [(42, 42), (5, 6, 7)])
    def test_row_independent_of_batch(self, size):
        theta = _theta(9, size, torch.float32)
        batch = _affine_grid_fast(theta, size, False)
        for i in (0, 4, 8):
            assert torch.equal(_affine_grid_fast(theta[i:i + 1], size, False)[0], batch[i])

    def test_inference_mode_then_autograd(self):
        # cached base factors built under inference_mode must still be usable by autograd
        with torch.inference_mode():
            _affine_grid_fast(torch.eye(2, 3)[None], (3, 17), False)
        theta = torch.eye(2, 3)[None].requires_grad_()
        _affine_grid_fast(theta, (3, 17), False).sum().backward()
        assert theta.grad is not None


def _st(transform: str) -> stnkit.SpatialTransformer:
    loc = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 8), nn.ReLU())
    st = stnkit.SpatialTransformer(loc, transform, output_size=(10, 12), in_features=8)
    with torch.no_grad():
        st.head.weight.normal_(0, 0.05)
    return st


class TestTraceable:
    @pytest.mark.parametrize("transform", ["affine", "attention", "projective", "tps"])
    def test_export_round_trip(self, transform):
        st = _st(transform)
        x = torch.rand(3, 1, 16, 16)
        program = torch.export.export(st, (x,))
        torch.testing.assert_close(program.module()(x), st(x), atol=1e-5, rtol=1e-5)

    @pytest.mark.slow
    @pytest.mark.parametrize("transform", ["affine", "tps"])
    def test_compile(self, transform):
        st = _st(transform)
        x = torch.rand(3, 1, 16, 16)
        out = torch.compile(st)(x)
        torch.testing.assert_close(out, st(x), atol=1e-5, rtol=1e-5)
        out.sum().backward()


def _tps_reference(t: ThinPlateSpline, params, size, align_corners):
    return t.grid(params, size, align_corners, fast=False)


class TestTPSGrid:
    @pytest.mark.parametrize("grid_size", [2, 4, 8])
    @pytest.mark.parametrize("size", [(7, 9), (1, 5), (28, 28)])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_matches_reference(self, grid_size, size, align_corners, dtype):
        t = ThinPlateSpline(grid_size=grid_size)
        params = (t.identity()[None].to(dtype) + 0.05 * torch.randn(3, t.num_params, dtype=dtype)).requires_grad_()
        grid = t.grid(params, size, align_corners)
        ref = _tps_reference(t, params, size, align_corners)
        tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
        torch.testing.assert_close(grid, ref, **tol)
        go = torch.randn_like(grid)
        (a,) = torch.autograd.grad(grid, params, go)
        (b,) = torch.autograd.grad(ref, params, go)
        torch.testing.assert_close(a, b, atol=1e-3 if dtype == torch.float32 else 1e-10, rtol=1e-4)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity_matches_affine_identity(self, align_corners):
        t = ThinPlateSpline()
        ident = t.grid(t.identity()[None], (28, 28), align_corners)
        affine = stnkit.Affine().grid(stnkit.Affine().identity()[None], (28, 28), align_corners)
        assert float((ident - affine).abs().max()) <= 1e-6

    def test_gradcheck(self):
        t = ThinPlateSpline(grid_size=3)
        params = (t.identity()[None].double() + 0.05 * torch.randn(2, t.num_params, dtype=torch.float64))
        assert torch.autograd.gradcheck(lambda p: t.grid(p, (4, 5)), (params.requires_grad_(),), fast_mode=True)
        assert torch.autograd.gradgradcheck(lambda p: t.grid(p, (4, 5)), (params,), fast_mode=True)

    def test_uses_the_op(self):
        t = ThinPlateSpline()
        grid = t.grid(t.identity()[None].requires_grad_(), (5, 6))
        assert "stnkit_tps_grid" in type(grid.grad_fn.next_functions[0][0]).__name__ + type(grid.grad_fn).__name__

    @pytest.mark.parametrize("grid_size", [4, 8])
    def test_row_independent_of_batch(self, grid_size):
        # a sample's grid must not depend on the batch it is computed in (data generation relies on it)
        t = ThinPlateSpline(grid_size=grid_size)
        params = t.identity()[None] + 0.05 * torch.randn(7, t.num_params)
        batch = t.grid(params, (42, 42))
        for i in (0, 3, 6):
            assert torch.equal(t.grid(params[i:i + 1], (42, 42))[0], batch[i])

    def test_cache_follows_dtype(self):
        t = ThinPlateSpline()
        g32 = t.grid(t.identity()[None], (6, 6))
        g64 = t.grid(t.identity()[None].double(), (6, 6))
        assert g32.dtype == torch.float32
        assert g64.dtype == torch.float64
