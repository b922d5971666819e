import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import stnkit
from stnkit.transforms import ThinPlateSpline, regular_control_points
from tests._reference import grid_loop, tps_point


def perturbed(t, n=2, scale=0.1, dtype=torch.float64):
    return t.identity().to(dtype).expand(n, -1) + scale * torch.randn(n, t.num_params, dtype=dtype)


class TestThinPlateSpline:
    def test_default_is_paper_4x4(self):
        t = ThinPlateSpline()
        assert t.num_params == 32
        assert t.control_points.shape == (16, 2)
        xs = sorted(set(t.control_points[:, 0].tolist()))
        np.testing.assert_allclose(xs, [-1.0, -1 / 3, 1 / 3, 1.0])

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_reference(self, align_corners):
        t = ThinPlateSpline(grid_size=3)
        p = perturbed(t, n=1)
        expected = grid_loop(lambda x, y: tps_point(t.control_points.numpy(), p[0].numpy(), x, y), 5, 6,
                             align_corners)
        np.testing.assert_allclose(t.grid(p, (5, 6), align_corners)[0].numpy(), expected, atol=1e-10)

    def test_custom_control_points_reference(self):
        cp = torch.tensor([[-0.8, -0.6], [0.7, -0.9], [0.1, 0.8], [0.9, 0.5], [-0.5, 0.3]], dtype=torch.float64)
        t = ThinPlateSpline(cp)
        p = perturbed(t, n=1)
        pts = torch.rand(7, 2, dtype=torch.float64) * 2 - 1
        expected = np.stack([tps_point(cp.numpy(), p[0].numpy(), *pt) for pt in pts.numpy()])
        np.testing.assert_allclose(t.transform_points(p, pts)[0].numpy(), expected, atol=1e-10)

    def test_interpolates_control_points(self):
        t = ThinPlateSpline(grid_size=(3, 5))
        p = perturbed(t, n=3)
        got = t.transform_points(p, t.control_points)
        torch.testing.assert_close(got, p.view(3, -1, 2), atol=1e-10, rtol=0)

    def test_reproduces_affine(self):
        t = ThinPlateSpline()
        theta = torch.tensor([[[0.9, -0.2, 0.1], [0.3, 1.1, -0.2]]], dtype=torch.float64)
        cp = t.control_points
        params = (cp @ theta[0, :, :2].T + theta[0, :, 2]).reshape(1, -1)  # affine image of the control points
        expected = stnkit.transforms.affine_grid(theta, (9, 7))
        torch.testing.assert_close(t.grid(params, (9, 7)), expected, atol=1e-10, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity_exact_float32(self, align_corners):
        t = ThinPlateSpline(grid_size=8)
        grid = t.grid(t.identity()[None], (60, 60), align_corners)
        assert grid.dtype == torch.float32
        torch.testing.assert_close(grid, stnkit.identity_grid((60, 60), align_corners), atol=1e-6, rtol=0)

    def test_accepts_point_shape(self):
        t = ThinPlateSpline()
        p = perturbed(t)
        torch.testing.assert_close(t.grid(p.view(2, 16, 2), (5, 5)), t.grid(p, (5, 5)))

    def test_basis_cached_not_in_state_dict(self):
        t = ThinPlateSpline()
        t.grid(t.identity()[None], (10, 12))
        first = t.basis((10, 12))[1]
        t.grid(t.identity()[None], (10, 12))
        assert t.basis((10, 12))[1] is first  # reused, not rebuilt
        assert t.state_dict() == {}
        st = stnkit.SpatialTransformer(torch.nn.Flatten(), t, in_features=4)
        assert all(not k.startswith("transform.") for k in st.state_dict())

    def test_half_keeps_float64_system(self):
        t = ThinPlateSpline().half()
        assert t.control_points.dtype == torch.float64
        assert t.grid(t.identity()[None], (4, 4)).dtype == torch.float32

    def test_gradcheck(self):
        t = ThinPlateSpline(grid_size=3)
        x = torch.rand(2, 1, 6, 5, dtype=torch.float64, requires_grad=True)
        p = perturbed(t).requires_grad_()
        assert gradcheck(lambda x, p: stnkit.warp(x, p, t, (4, 4)), (x, p))

    def test_regular_control_points_errors(self):
        with pytest.raises(ValueError, match="at least 2"):
            regular_control_points(1)

    @pytest.mark.parametrize(
        ("cp", "match"),
        [
            (torch.zeros(4, 3), r"\(K, 2\)"),
            (torch.zeros(2, 2), r"K >= 3"),
            (torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), "coincide"),
            (torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [-1.0, -1.0]]), "collinear"),
            (torch.zeros(4, 2, dtype=torch.long), "floating-point"),
            (torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, float("nan")], [1.0, 1.0]]), r"point 2 is \[0.0, nan\]"),
            (torch.tensor([[0.0, 0.0], [float("inf"), 0.0], [0.0, 1.0]]), "must be finite; point 1"),
        ],
    )
    def test_bad_control_points(self, cp, match):
        with pytest.raises((ValueError, TypeError), match=match):
            ThinPlateSpline(cp)

    def test_wrong_param_count(self):
        with pytest.raises(ValueError, match=r"transform='tps' must have shape \(N, 32\) or \(N, 16, 2\)"):
            ThinPlateSpline().grid(torch.zeros(2, 30), (4, 4))


class TestCaches:
    def test_inference_mode_first_then_training(self):
        # the first forward under inference_mode fills the basis cache; training later must still backprop
        st = stnkit.SpatialTransformer(torch.nn.Flatten(), "tps", output_size=(6, 5), in_features=64)
        with torch.inference_mode():
            st(torch.rand(2, 1, 8, 8))
        out = st(torch.rand(2, 1, 8, 8))
        out.square().sum().backward()
        assert st.head.bias.grad is not None
        x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
        t = ThinPlateSpline()
        with torch.inference_mode():
            t.grid(t.identity().double()[None], (3, 4))
        p = perturbed(t, 1).requires_grad_()
        assert gradcheck(lambda u, q: stnkit.warp(u, q, t, (3, 4)), (x, p))

    def test_grid_on_the_params_device(self):
        # a transform left on the CPU follows its inputs' device (here meta: shapes only)
        t = ThinPlateSpline()
        grid = t.grid(torch.empty(3, t.num_params, device="meta"), (4, 5))
        assert grid.shape == (3, 4, 5, 2)
        assert grid.device.type == "meta"
        base, m = t.basis((4, 5), device="meta")
        assert base.device.type == m.device.type == "meta"
        assert t.control_points.device.type == "cpu"
