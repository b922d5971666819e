import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import stnkit
from stnkit.grid import normalize_matrix
from stnkit.transforms import Affine, Projective, inverse
from tests._reference import grid_loop, projective_point


def random_h(n=3, dtype=torch.float64, persp=0.1):
    p = Projective().identity().to(dtype).expand(n, -1) + 0.2 * torch.randn(n, 8, dtype=dtype)
    p[:, 6:] = persp * torch.randn(n, 2, dtype=dtype)
    return p


class TestProjective:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_reference(self, align_corners):
        p = random_h(1)
        expected = grid_loop(lambda x, y: projective_point(p[0], x, y), 5, 4, align_corners)
        np.testing.assert_allclose(Projective().grid(p, (5, 4), align_corners)[0].numpy(), expected, atol=1e-12)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, align_corners):
        t = Projective()
        torch.testing.assert_close(t.grid(t.identity()[None], (6, 7), align_corners),
                                   stnkit.identity_grid((6, 7), align_corners))

    def test_zero_perspective_is_affine(self):
        p = random_h(4, persp=0.0)
        torch.testing.assert_close(Projective().grid(p, (9, 8)), Affine().grid(p[:, :6], (9, 8)))

    def test_accepts_3x3_and_normalises(self):
        p = random_h(2)
        m = Projective().to_matrix(p) * 3.0  # scaled homography: same transform
        torch.testing.assert_close(Projective().grid(m, (4, 4)), Projective().grid(p, (4, 4)))

    def test_round_trips(self):
        t = Projective()
        p, q = random_h(3), random_h(3)
        torch.testing.assert_close(t.from_matrix(t.to_matrix(p)), p)
        torch.testing.assert_close(t.compose(p, t.inverse(p)), t.identity().double().expand(3, -1), atol=1e-10,
                                   rtol=0)
        pts = torch.rand(5, 2, dtype=torch.float64) * 2 - 1
        # composing then mapping == mapping by b_from_c, then a_from_b
        torch.testing.assert_close(t.transform_points(t.compose(p, q), pts),
                                   t.transform_points(p, t.transform_points(q, pts)))

    def test_degenerate_is_finite(self):
        # w = 0 on the vertical line x = 0 (h31 = 1, h32 = 0, h33 = 1 shifted): never NaN or inf, grads finite
        p = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, -1.0, 0]], requires_grad=True)
        grid = Projective().grid(p, (4, 5), align_corners=True)  # x = 1 column has w = 0 exactly
        assert torch.isfinite(grid).all()
        x = torch.rand(1, 1, 4, 5)
        out = stnkit.warp(x, p, "projective", align_corners=True)
        out.sum().backward()
        assert torch.isfinite(out).all()
        assert torch.isfinite(p.grad).all()
        singular = torch.zeros(1, 8)  # maps everything to w = 1 and (0, 0): finite too
        assert torch.isfinite(Projective().grid(singular, (3, 3))).all()

    def test_gradcheck(self):
        x = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
        p = random_h(2).requires_grad_()
        assert gradcheck(lambda x, p: stnkit.warp(x, p, "projective", (4, 5)), (x, p))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"\(N, 8\) or \(N, 3, 3\).*got \(2, 9\)"):
            Projective().grid(torch.zeros(2, 9), (4, 4))

    def test_matches_kornia_warp_perspective(self):
        import kornia  # dev-only oracle

        img = torch.rand(2, 1, 16, 20)
        src = torch.tensor([[[0.0, 0.0], [19.0, 0.0], [19.0, 15.0], [0.0, 15.0]]]).expand(2, -1, -1)
        dst = src + torch.tensor([[[1.0, 2.0], [-2.0, 1.0], [-1.0, -2.0], [2.0, -1.0]],
                                  [[0.0, 1.0], [-1.0, 0.0], [1.0, -1.0], [0.5, 0.5]]])
        dst_from_src_px = kornia.geometry.transform.get_perspective_transform(src, dst)
        expected = kornia.geometry.transform.warp_perspective(img, dst_from_src_px, (16, 20), align_corners=True)
        src_from_dst = normalize_matrix(inverse(dst_from_src_px), (16, 20), (16, 20), align_corners=True)
        got = stnkit.warp(img, Projective().from_matrix(src_from_dst), "projective", align_corners=True)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


class TestDivide:
    def test_same_values_and_gradients_as_copysign(self):
        # the guarded division without copysign (which ONNX cannot translate): the previous formula as reference
        from stnkit.transforms.projective import PERSPECTIVE_EPS, _divide

        eps = PERSPECTIVE_EPS
        w = torch.tensor([-2.0, -3e-6, -1e-6, -5e-7, 0.0, 5e-7, 1e-6, 3e-6, 0.7], dtype=torch.float64)
        w = w.requires_grad_()
        num = torch.linspace(-1, 2, 9, dtype=torch.float64, requires_grad=True)
        got = _divide(num, w)
        expected = num / torch.copysign(w.abs().clamp_min(eps), w)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        g_got = torch.autograd.grad(got.sum(), (num, w))
        g_exp = torch.autograd.grad(expected.sum(), (num, w))
        for a, b in zip(g_got, g_exp, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert _divide(torch.ones(1), torch.tensor([-0.0])).item() == 1 / eps  # -0.0 counts as positive too

    def test_gradgradcheck(self):
        from torch.autograd import gradgradcheck

        p = random_h(2).requires_grad_()
        assert gradgradcheck(lambda q: Projective().grid(q, (3, 4)), (p,))
