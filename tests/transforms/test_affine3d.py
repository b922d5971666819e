import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import stnkit
from stnkit.transforms import Affine3D, affine_grid3d
from tests._reference import centre


class TestAffine3D:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(2, 3, 4), (5, 5, 5), (1, 4, 3)])
    def test_matches_torch(self, size, align_corners):
        theta = torch.randn(3, 3, 4, dtype=torch.float64)
        expected = F.affine_grid(theta, (3, 1, *size), align_corners=align_corners)
        torch.testing.assert_close(affine_grid3d(theta, size, align_corners=align_corners), expected)
        torch.testing.assert_close(Affine3D().grid(theta.reshape(3, 12), size, align_corners), expected)

    def test_matches_reference(self):
        theta = np.random.default_rng(0).normal(size=(3, 4))
        d, h, w = 2, 3, 4
        expected = np.zeros((d, h, w, 3))
        for k in range(d):
            for i in range(h):
                for j in range(w):
                    expected[k, i, j] = theta @ np.array([centre(j, w, False), centre(i, h, False),
                                                          centre(k, d, False), 1.0])
        got = Affine3D().grid(torch.from_numpy(theta).reshape(1, 12), (d, h, w))[0]
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)

    def test_identity_and_algebra(self):
        t = Affine3D()
        torch.testing.assert_close(t.grid(t.identity()[None], (3, 4, 5)), stnkit.identity_grid((3, 4, 5)))
        p = t.identity().double().expand(2, -1) + 0.2 * torch.randn(2, 12, dtype=torch.float64)
        torch.testing.assert_close(t.compose(p, t.inverse(p)), t.identity().double().expand(2, -1), atol=1e-10,
                                   rtol=0)
        assert t.to_matrix(p).shape == (2, 4, 4)

    def test_gradcheck(self):
        x = torch.rand(1, 2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
        p = (Affine3D().identity().double()[None] + 0.2 * torch.randn(1, 12, dtype=torch.float64)).requires_grad_()
        assert gradcheck(lambda x, p: stnkit.warp(x, p, "affine3d", (2, 3, 3)), (x, p))

    def test_warp_volume_identity(self):
        x = torch.rand(2, 3, 4, 5, 6)
        out = stnkit.warp(x, Affine3D().identity().expand(2, -1), "affine3d")
        torch.testing.assert_close(out, x)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"input for transform='affine3d' must have shape \(N, C, D, H, W\)"):
            stnkit.warp(torch.rand(2, 1, 4, 4), torch.zeros(2, 12), "affine3d")
        with pytest.raises(ValueError, match="output_size must have 3 entries"):
            Affine3D().grid(torch.zeros(1, 12), (4, 4))
        with pytest.raises(ValueError, match="bicubic"):
            stnkit.warp(torch.rand(1, 1, 2, 2, 2), torch.zeros(1, 12), "affine3d", mode="bicubic")
