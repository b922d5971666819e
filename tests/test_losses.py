import pytest
import torch

from stnkit.losses import attended_box, box_iou, triplet_hinge_loss
from stnkit.transforms import get


def triplet_loop(e, r, margin):
    """The App. A.2 loss written as the paper's double sum, in float64."""
    total = 0.0
    n = e.shape[0]
    for i in range(n):
        neg = float(((e[i] - r[i]) ** 2).sum())
        for j in range(n):
            if j != i:
                total += max(0.0, float(((e[i] - e[j]) ** 2).sum()) - neg + margin)
    return total


class TestTripletHingeLoss:
    @pytest.mark.parametrize("margin", [1.0, 0.3])
    def test_matches_reference(self, margin):
        g = torch.Generator().manual_seed(1)
        e = torch.randn(7, 5, generator=g, dtype=torch.float64) * 0.5
        r = torch.randn(7, 5, generator=g, dtype=torch.float64) * 0.5
        ref = triplet_loop(e, r, margin)
        assert ref > 0  # some hinge terms are active, so the check is not trivially 0 == 0
        assert triplet_hinge_loss(e, r, margin, reduction="sum").item() == pytest.approx(ref, rel=1e-9)
        assert triplet_hinge_loss(e, r, margin).item() == pytest.approx(ref / (7 * 6), rel=1e-9)
        terms = triplet_hinge_loss(e, r, margin, reduction="none")
        assert terms.shape == (7, 7)
        assert torch.all(terms.diagonal() == 0)

    def test_zero_when_separated(self):
        e = torch.zeros(4, 3)
        assert triplet_hinge_loss(e, e + 2.0).item() == 0.0  # 0 - 12 + 1 < 0
        assert triplet_hinge_loss(e, e).item() == pytest.approx(1.0)  # every term = margin

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(2)
        e = (torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
        r = (torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: triplet_hinge_loss(a, b, reduction="sum"), (e, r))

    def test_errors(self):
        with pytest.raises(ValueError, match="random_embeddings"):
            triplet_hinge_loss(torch.zeros(3, 4), torch.zeros(2, 4))
        with pytest.raises(ValueError, match="embeddings must have shape"):
            triplet_hinge_loss(torch.zeros(3), torch.zeros(3))
        with pytest.raises(ValueError, match="reduction"):
            triplet_hinge_loss(torch.zeros(3, 4), torch.zeros(3, 4), reduction="max")


class TestBoxIoU:
    def test_hand_computed(self):
        a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4], [0, 0, 2, 2], [2, 2, 2, 2]])
        b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10], [1, 1, 3, 3], [3, 3, 5, 5], [2, 2, 2, 2]])
        # 50 / 150; identical; inner box 4 / 16; disjoint; both empty
        expected = torch.tensor([1 / 3, 1.0, 0.25, 0.0, 0.0])
        assert torch.allclose(box_iou(a, b), expected)
        assert torch.allclose(box_iou(b, a), expected)  # symmetric

    def test_errors(self):
        with pytest.raises(ValueError, match="boxes_a"):
            box_iou(torch.zeros(2, 3), torch.zeros(2, 3))
        with pytest.raises(ValueError, match="boxes_b"):
            box_iou(torch.zeros(2, 4), torch.zeros(3, 4))


class TestAttendedBox:
    def test_identity_is_whole_image(self):
        t = get("affine")
        box = attended_box(t, t.identity()[None], (42, 60))
        assert torch.allclose(box, torch.tensor([[0.0, 0.0, 60.0, 42.0]]))

    def test_attention_hand_computed(self):
        # s = 28/84 and a shift of (+0.5, -0.25) normalised = (+21, -10.5) px: the 28x28 box around (63, 31.5)
        box = attended_box("attention", torch.tensor([[1 / 3, 0.5, -0.25]]), (84, 84))
        assert torch.allclose(box, torch.tensor([[49.0, 17.5, 77.0, 45.5]]), atol=1e-4)

    def test_matches_sampled_crop(self):
        # the box is where the sampled crop comes from: a crop of an image whose box region is 1 and the rest 0
        image = torch.zeros(1, 1, 40, 40)
        image[..., 10:30, 5:25] = 1.0
        params = torch.tensor([[0.5, -0.25, 0.0]])  # half-size window, shifted left by a quarter
        box = attended_box("attention", params, (40, 40))
        assert torch.allclose(box, torch.tensor([[5.0, 10.0, 25.0, 30.0]]))
        from stnkit import warp

        crop = warp(image, params, "attention", (20, 20))
        assert torch.allclose(crop, torch.ones_like(crop))

    def test_rotation_takes_bounding_box(self):
        import math

        a = math.cos(math.pi / 4)
        params = torch.tensor([[a, -a, 0.0, a, a, 0.0]])  # 45 degrees, scale 1: corners at +-sqrt(2) on the axes
        box = attended_box("affine", params, (20, 20))
        half = 10 * math.sqrt(2)
        assert torch.allclose(box, torch.tensor([[10 - half, 10 - half, 10 + half, 10 + half]]), atol=1e-4)

    def test_errors(self):
        with pytest.raises(ValueError, match="2-D transform"):
            attended_box("affine3d", torch.eye(3, 4).reshape(1, 12), (4, 4))
