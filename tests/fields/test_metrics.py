import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from stnkit import fields
from stnkit.grid import identity_grid


def affine_field(matrix, size, align_corners=False):
    """Displacement of p -> A p + t, normalised (x, y[, z]) channels-first."""
    d = len(size)
    grid = identity_grid(size, align_corners, dtype=torch.float64)  # (1, *size, d)
    mapped = grid @ matrix[:d, :d].T + matrix[:d, d]
    return (mapped - grid).movedim(-1, 1)  # (1, d, *size)


class TestJacobianDeterminant:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(5, 7), (4, 5, 6)])
    def test_affine_field_equals_matrix_det(self, size, align_corners):
        d = len(size)
        m = torch.eye(d + 1, dtype=torch.float64)
        m[:d, :d] += 0.3 * torch.randn(d, d, dtype=torch.float64)
        m[:d, d] = 0.1
        field = affine_field(m, size, align_corners)
        det = fields.jacobian_determinant(field, align_corners=align_corners)
        assert det.shape == (1, *size)
        torch.testing.assert_close(det, torch.linalg.det(m[:d, :d]).expand_as(det))
        for units, order in [("voxel", "ij"), ("voxel", "xy"), ("normalized", "ij")]:
            other = fields.convert(field, to_units=units, to_order=order, align_corners=align_corners)
            torch.testing.assert_close(fields.jacobian_determinant(other, units=units, order=order,
                                                                   align_corners=align_corners), det)

    def test_voxel_finite_differences_by_hand(self):
        field = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
        field[0, 0] = torch.arange(4.0) ** 2  # d_x = x^2 in voxels (x along width)
        det = fields.jacobian_determinant(field, units="voxel")
        # central difference at x = 1, 2: ((x + 1)^2 - (x - 1)^2) / 2 = 2x; one-sided at the edges: 1 and 5
        torch.testing.assert_close(det[0, 0], torch.tensor([2.0, 3.0, 5.0, 6.0], dtype=torch.float64))

    def test_gradcheck(self):
        d = (0.1 * torch.randn(1, 2, 3, 4, dtype=torch.float64)).requires_grad_()
        assert gradcheck(fields.jacobian_determinant, (d,))
        assert gradgradcheck(fields.jacobian_determinant, (d,))
        d3 = (0.1 * torch.randn(1, 3, 2, 3, 2, dtype=torch.float64)).requires_grad_()
        assert gradcheck(fields.jacobian_determinant, (d3,))

    def test_errors(self):
        with pytest.raises(ValueError, match="every spatial size >= 2"):
            fields.jacobian_determinant(torch.zeros(1, 2, 1, 4))


class TestFoldingFraction:
    def test_known_folded_field(self):
        field = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
        x = torch.arange(8.0, dtype=torch.float64)
        field[1, 0] = torch.where(x < 4, 0.0, -2.0 * (x - 3))  # from column 4 on, x' = -x + 6: a mirror fold
        frac = fields.folding_fraction(field, units="voxel")
        # x' = 0, 1, 2, 3, 2, 1, 0, -1: central differences 1, 1, 0, -1, ... (one-sided at the two ends)
        det = fields.jacobian_determinant(field, units="voxel")[1, 0]
        torch.testing.assert_close(det, torch.tensor([1, 1, 1, 0, -1, -1, -1, -1], dtype=torch.float64))
        torch.testing.assert_close(frac, torch.tensor([0.0, 5 / 8], dtype=torch.float64))

    def test_3d_flip(self):
        field = torch.zeros(1, 3, 3, 3, 3)
        field[:, 2] = 2 - 2 * torch.arange(3.0).reshape(3, 1, 1)  # z' = 2 - z: a mirror
        assert fields.folding_fraction(field, units="voxel").item() == 1.0
