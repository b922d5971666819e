import importlib
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from stnkit import fields


@pytest.fixture(scope="module")
def monai_losses():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("monai.losses")


class TestGradientLoss:
    def test_hand_computed(self):
        d = torch.zeros(1, 2, 3, 4)
        d[:, 0] = torch.arange(4.0) * 2  # slope 2 along width: squared difference 4, none along height
        assert fields.gradient_loss(d).item() == pytest.approx(4 / 2 / 2)  # mean over 2 channels, 2 axes
        assert fields.gradient_loss(d, "l1").item() == pytest.approx(2 / 2 / 2)
        assert fields.gradient_loss(torch.full((1, 3, 3, 4, 5), 0.7)).item() == 0

    def test_checkerboard_is_penalised(self):
        board = (torch.arange(4).reshape(4, 1) + torch.arange(4)) % 2
        d = board.float().expand(1, 2, 4, 4)
        assert fields.gradient_loss(d).item() == pytest.approx(1.0)

    def test_gradcheck(self):
        d = torch.randn(1, 3, 3, 3, 4, dtype=torch.float64, requires_grad=True)
        assert gradcheck(fields.gradient_loss, (d,))
        assert gradgradcheck(fields.gradient_loss, (d,))

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown penalty"):
            fields.gradient_loss(torch.zeros(1, 2, 4, 4), "l3")
        with pytest.raises(ValueError, match="displacement must have shape"):
            fields.gradient_loss(torch.zeros(2, 4, 4))


class TestBendingEnergy:
    def test_hand_computed(self):
        y, x = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
        d = torch.stack([x * y, 0.5 * x**2 + 3 * x - y]).unsqueeze(0)  # d_xy = 1; d_xx = 1
        # channel 0: 2 * 1^2 (mixed, counted twice); channel 1: 1^2; mean over the two channels
        assert fields.bending_energy(d).item() == pytest.approx((2 + 1) / 2)

    @pytest.mark.parametrize("size", [(5, 6), (4, 5, 6)])
    def test_zero_for_affine_and_matches_monai(self, monai_losses, size):
        g = torch.meshgrid(*[torch.arange(float(s), dtype=torch.float64) for s in size], indexing="ij")
        affine = torch.stack([sum((k + c + 1) * gk for k, gk in enumerate(g)) for c in range(len(size))])[None]
        assert fields.bending_energy(affine).abs().item() < 1e-20
        d = torch.randn(2, len(size), *size, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI indexes with lists (a torch deprecation)
            theirs = monai_losses.BendingEnergyLoss(normalize=False)(d)
        torch.testing.assert_close(fields.bending_energy(d), theirs)

    def test_gradcheck(self):
        d = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        assert gradcheck(fields.bending_energy, (d,))
        assert gradgradcheck(fields.bending_energy, (d,))

    def test_errors(self):
        with pytest.raises(ValueError, match="every spatial size >= 3"):
            fields.bending_energy(torch.zeros(1, 2, 2, 5))


class TestSimilarity:
    def test_mse(self):
        a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
        assert fields.mse(a, b).item() == pytest.approx((1 + 4 + 9) / 4)
        with pytest.raises(ValueError, match="same shape"):
            fields.mse(a, torch.zeros(1, 1, 2, 3))

    def test_lncc_hand_computed(self):
        x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
        # window 3 at the centre: x = (1, 2, 3) against (2, 4, 6) plus zero padding of the box elsewhere;
        # the centre pixel's 3x3 box holds (1, 2, 3) and six zeros for both: perfectly correlated
        assert -fields.lncc(x, 2 * x, window=3, eps=0).item() == pytest.approx(1.0)
        assert fields.lncc(x, -x, window=3, eps=0).item() == pytest.approx(-1.0)  # squared correlation

    @pytest.mark.parametrize("size", [(12, 13), (6, 7, 8)])
    def test_lncc_matches_monai(self, monai_losses, size):
        a, b = torch.rand(2, 2, *size, dtype=torch.float64), torch.rand(2, 2, *size, dtype=torch.float64)
        theirs = monai_losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=len(size), kernel_size=5,
                                                                 smooth_dr=1e-12)(a, b)
        torch.testing.assert_close(fields.lncc(a, b, window=5, eps=0), theirs)
        assert -1 <= fields.lncc(a, b).item() <= 0  # window 9 wider than the volume: fine

    def test_lncc_gradcheck(self):
        a = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
        b = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
        assert gradcheck(lambda a, b: fields.lncc(a, b, window=3), (a, b))
        assert gradgradcheck(lambda a, b: fields.lncc(a, b, window=3), (a, b))

    def test_lncc_errors(self):
        with pytest.raises(ValueError, match="window must be an odd positive int"):
            fields.lncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window=4)
