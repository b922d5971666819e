import pytest
import torch
import torch.nn.functional as F

from stnkit.grid import (
    base_coords,
    denormalize_matrix,
    denormalize_points,
    identity_grid,
    normalization_matrix,
    normalize_matrix,
    normalize_points,
)
from tests._reference import centre


class TestBaseCoords:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("n", [1, 2, 5, 28])
    def test_matches_reference(self, n, align_corners):
        expected = torch.tensor([centre(i, n, align_corners) for i in range(n)], dtype=torch.float64)
        torch.testing.assert_close(base_coords(n, align_corners, dtype=torch.float64), expected)

    def test_default_dtype_float32(self):
        assert base_coords(3).dtype == torch.float32


class TestIdentityGrid:
    @pytest.mark.filterwarnings("ignore:.*unit-size grids.*:UserWarning")  # torch notes its size-1 convention
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(1, 1), (3, 5), (28, 28), (2, 3, 4)])
    def test_matches_affine_grid(self, size, align_corners):
        k = len(size)
        theta = torch.eye(k, k + 1, dtype=torch.float64)[None]
        expected = F.affine_grid(theta, (1, 1, *size), align_corners=align_corners)
        got = identity_grid(size, align_corners, dtype=torch.float64)
        assert got.shape == (1, *size, k)
        torch.testing.assert_close(got, expected)

    @pytest.mark.parametrize("bad", [(0, 3), (3, -1), (2,), (1, 2, 3, 4)])
    def test_errors(self, bad):
        with pytest.raises(ValueError, match="output_size"):
            identity_grid(bad)


class TestPointConversions:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_round_trip(self, align_corners):
        pts = torch.rand(10, 2, dtype=torch.float64) * 30
        back = denormalize_points(normalize_points(pts, (20, 30), align_corners), (20, 30), align_corners)
        torch.testing.assert_close(back, pts)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_pixel_centres(self, align_corners):
        h, w = 4, 6
        px = torch.tensor([[j, i] for i in range(h) for j in range(w)], dtype=torch.float64)
        expected = torch.tensor([[centre(j, w, align_corners), centre(i, h, align_corners)]
                                 for i in range(h) for j in range(w)], dtype=torch.float64)
        torch.testing.assert_close(normalize_points(px, (h, w), align_corners), expected)

    def test_edges_align_corners_false(self):
        # the outer edges of the border pixels (-0.5 and W - 0.5 in pixels) are -1 and 1
        pts = torch.tensor([[-0.5, -0.5], [7.5, 3.5]])
        torch.testing.assert_close(normalize_points(pts, (4, 8)), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


class TestMatrixConversions:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("shape", [(2, 3), (3, 3)])
    def test_round_trip(self, align_corners, shape):
        m = torch.randn(4, *shape, dtype=torch.float64)
        if shape == (3, 3):
            m[:, 2] = torch.tensor([0.01, -0.02, 1.0], dtype=torch.float64)
        norm = normalize_matrix(m, (20, 30), (10, 15), align_corners)
        torch.testing.assert_close(denormalize_matrix(norm, (20, 30), (10, 15), align_corners), m)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_points_consistent(self, align_corners):
        # mapping a dst pixel with the pixel matrix == normalising, mapping with the normalised matrix, denormalising
        m_px = torch.tensor([[[0.9, -0.2, 3.0], [0.1, 1.1, -2.0]]], dtype=torch.float64)
        src, dst = (20, 30), (12, 16)
        m = normalize_matrix(m_px, src, dst, align_corners)
        p_px = torch.tensor([[5.0, 7.0]], dtype=torch.float64)
        via_px = p_px @ m_px[0, :, :2].T + m_px[0, :, 2]
        p_norm = normalize_points(p_px, dst, align_corners)
        via_norm = denormalize_points(p_norm @ m[0, :, :2].T + m[0, :, 2], src, align_corners)
        torch.testing.assert_close(via_norm, via_px)

    def test_3d(self):
        m = torch.randn(2, 3, 4, dtype=torch.float64)
        norm = normalize_matrix(m, (5, 6, 7), (5, 6, 7))
        torch.testing.assert_close(denormalize_matrix(norm, (5, 6, 7), (5, 6, 7)), m)
        assert normalization_matrix((5, 6, 7)).shape == (4, 4)

    def test_errors(self):
        with pytest.raises(ValueError, match="shape"):
            normalize_matrix(torch.eye(3), (4, 4), (4, 4))
        with pytest.raises(ValueError, match="src_size"):
            normalize_matrix(torch.eye(3)[None], (4, 4, 4), (4, 4))
