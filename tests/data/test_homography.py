"""``stnkit.transforms.homography_from_points`` (lives here beside its one user, the P distortion)."""

import numpy as np
import pytest
import torch

from stnkit.transforms import Projective, homography_from_points


def _loop_reference(dst, src):
    """Per-sample DLT with h33 = 1, solved by numpy least squares, written from the equations."""
    out = []
    for d, s in zip(dst.double().numpy(), src.double().numpy()):
        rows, rhs = [], []
        for (x, y), (u, v) in zip(d, s):
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            rhs.append(u)
            rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
            rhs.append(v)
        out.append(np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0])
    return torch.tensor(np.array(out))


def _random_homographies(n, g):
    h = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
    h[:, :2] += 0.2 * torch.randn(n, 2, 3, generator=g, dtype=torch.float64)
    h[:, 2, :2] = 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return Projective().from_matrix(h)  # (n, 8)


class TestHomographyFromPoints:
    @pytest.mark.parametrize("k", [4, 7])
    def test_matches_reference(self, k):
        g = torch.Generator().manual_seed(k)
        dst = torch.rand(5, k, 2, generator=g, dtype=torch.float64) * 2 - 1
        src = dst + 0.1 * torch.randn(5, k, 2, generator=g, dtype=torch.float64)  # noisy: least squares for k > 4
        got = homography_from_points(dst, src)
        assert got.shape == (5, 8)
        assert torch.allclose(got, _loop_reference(dst, src), atol=1e-8)

    def test_recovers_homography(self):
        g = torch.Generator().manual_seed(0)
        params = _random_homographies(6, g)
        dst = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.3, 0.1]], dtype=torch.float64)
        src = Projective().transform_points(params, dst)
        for k in (4, 5):
            got = homography_from_points(dst[:k].expand(6, -1, -1), src[:, :k])
            assert torch.allclose(got, params, atol=1e-9)

    def test_float32(self):
        dst = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
        got = homography_from_points(dst, 2 * dst)
        assert got.dtype == torch.float32
        assert torch.allclose(got, torch.tensor([[2.0, 0, 0, 0, 2, 0, 0, 0]]), atol=1e-6)

    def test_errors(self):
        pts = torch.zeros(2, 4, 2)
        with pytest.raises(ValueError, match=r"dst_points must have shape \(N, K, 2\) with K >= 4"):
            homography_from_points(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2))
        with pytest.raises(ValueError, match="same shape"):
            homography_from_points(pts, torch.zeros(3, 4, 2))
        with pytest.raises(TypeError, match="src_points"):
            homography_from_points(pts, torch.zeros(2, 4, 2, dtype=torch.int64))
