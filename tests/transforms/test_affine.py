import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import stnkit
from stnkit.grid import normalize_matrix
from stnkit.transforms import Affine, Attention, Similarity, Translation, affine_grid, compose, inverse
from tests._reference import affine_point, grid_loop

FAMILIES = [Affine, Attention, Translation, Similarity]


def random_params(t, n=3, dtype=torch.float64):
    return t.identity().to(dtype).expand(n, -1) + 0.3 * torch.randn(n, t.num_params, dtype=dtype)


class TestAffineGrid:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(1, 1), (5, 7), (28, 28), (6, 1)])
    def test_matches_torch(self, size, align_corners):
        theta = torch.randn(4, 2, 3, dtype=torch.float64)
        expected = F.affine_grid(theta, (4, 1, *size), align_corners=align_corners)
        torch.testing.assert_close(affine_grid(theta, size, align_corners=align_corners), expected)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_reference(self, align_corners):
        theta = torch.randn(1, 2, 3, dtype=torch.float64)
        expected = grid_loop(lambda x, y: affine_point(theta[0], x, y), 4, 6, align_corners)
        got = affine_grid(theta, (4, 6), align_corners=align_corners)[0]
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)

    def test_float32_under_autocast(self):
        theta = torch.randn(2, 2, 3).to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            g = affine_grid(theta, (4, 4))
        assert g.dtype == torch.float32

    def test_errors(self):
        with pytest.raises(ValueError, match=r"theta must have shape \(N, 2, 3\); got \(2, 3\)"):
            affine_grid(torch.zeros(2, 3), (4, 4))
        with pytest.raises(TypeError, match="floating-point"):
            affine_grid(torch.zeros(1, 2, 3, dtype=torch.long), (4, 4))


@pytest.mark.parametrize("cls", FAMILIES)
class TestFamilies:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, cls, align_corners):
        t = cls()
        ident = t.identity()
        assert ident.shape == (t.num_params,)
        assert ident.dtype == torch.float32
        grid = t.grid(ident.expand(2, -1), (5, 6), align_corners)
        torch.testing.assert_close(grid, stnkit.identity_grid((5, 6), align_corners).expand(2, -1, -1, -1))

    def test_reduces_to_affine(self, cls):
        t = cls()
        p = random_params(t)
        theta = t.affine_matrix(p)
        torch.testing.assert_close(t.grid(p, (7, 5)), F.affine_grid(theta, (3, 1, 7, 5), align_corners=False))

    def test_matrix_round_trip(self, cls):
        t = cls()
        p = random_params(t)
        torch.testing.assert_close(t.from_matrix(t.to_matrix(p)), p)

    def test_compose_inverse(self, cls):
        t = cls()
        p = random_params(t)
        q = random_params(t)
        torch.testing.assert_close(t.compose(p, t.inverse(p)), t.identity().double().expand(3, -1), atol=1e-10,
                                   rtol=0)
        torch.testing.assert_close(t.to_matrix(t.compose(p, q)), t.to_matrix(p) @ t.to_matrix(q))

    def test_transform_points_matches_grid(self, cls):
        t = cls()
        p = random_params(t, n=2)
        grid = t.grid(p, (3, 4))  # (2, 3, 4, 2)
        pts = stnkit.identity_grid((3, 4), dtype=torch.float64).reshape(-1, 2)
        torch.testing.assert_close(t.transform_points(p, pts), grid.reshape(2, -1, 2))

    def test_gradcheck(self, cls):
        t = cls()
        x = torch.rand(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        p = (random_params(t, n=2) * 0.5).requires_grad_()
        assert gradcheck(lambda x, p: stnkit.warp(x, p, t, (4, 3)), (x, p))

    def test_wrong_param_count(self, cls):
        t = cls()
        with pytest.raises(ValueError, match=f"transform='{t.name}'.*{t.num_params} parameters"):
            t.grid(torch.zeros(2, t.num_params + 1), (4, 4))


class TestConstrainedForms:
    def test_attention_matrix(self):
        p = torch.tensor([[0.5, 0.1, -0.2]])
        expected = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, -0.2]]])
        torch.testing.assert_close(Attention().affine_matrix(p), expected)

    def test_translation_matrix(self):
        p = torch.tensor([[0.3, -0.4]])
        torch.testing.assert_close(Translation().affine_matrix(p), torch.tensor([[[1.0, 0, 0.3], [0, 1.0, -0.4]]]))

    def test_similarity_scale_angle(self):
        s, phi = 1.5, 0.3
        p = Similarity.from_scale_angle(torch.tensor([s]), torch.tensor([phi]), torch.tensor([0.1]),
                                        torch.tensor([0.2]))
        expected = torch.tensor([[[s * math.cos(phi), -s * math.sin(phi), 0.1],
                                  [s * math.sin(phi), s * math.cos(phi), 0.2]]])
        torch.testing.assert_close(Similarity().affine_matrix(p), expected)

    def test_affine_accepts_matrix_shape(self):
        theta = torch.randn(2, 2, 3)
        torch.testing.assert_close(Affine().grid(theta, (3, 3)), Affine().grid(theta.reshape(2, 6), (3, 3)))


class TestAlgebraFunctions:
    def test_compose_inverse(self):
        a = Affine().to_matrix(torch.randn(3, 6, dtype=torch.float64))
        b = Affine().to_matrix(torch.randn(3, 6, dtype=torch.float64))
        torch.testing.assert_close(compose(a, b, inverse(b)), a)

    def test_errors(self):
        with pytest.raises(ValueError, match="homogeneous"):
            compose(torch.eye(3))
        with pytest.raises(ValueError, match="cannot compose"):
            compose(torch.eye(3)[None], torch.eye(4)[None])
        with pytest.raises(ValueError, match=r"\(N, 3, 3\)"):
            Affine().from_matrix(torch.zeros(2, 2, 3))


class TestPixelConversionAgainstKornia:
    """kornia's warp_affine takes a pixel-frame dst_from_src matrix; convert it and compare the warps."""

    @pytest.mark.parametrize("dsize", [(20, 24), (10, 12)])
    def test_warp_affine(self, dsize):
        import kornia  # dev-only oracle, installed by the test command
        img = torch.rand(2, 3, 20, 24)
        angle = torch.tensor([15.0, -30.0])
        center = torch.tensor([[11.5, 9.5], [10.0, 8.0]])
        dst_from_src_px = kornia.geometry.transform.get_rotation_matrix2d(center, angle, torch.ones(2, 2) * 0.9)
        dst_from_src_px[:, :, 2] += torch.tensor([[1.5, -2.0], [0.5, 1.0]])
        expected = kornia.geometry.transform.warp_affine(img, dst_from_src_px, dsize, align_corners=True)
        full = torch.cat([dst_from_src_px, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(2, -1, -1)], dim=1)
        src_from_dst = normalize_matrix(inverse(full), (20, 24), dsize, align_corners=True)
        got = stnkit.warp(img, Affine().from_matrix(src_from_dst), "affine", dsize, align_corners=True)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
