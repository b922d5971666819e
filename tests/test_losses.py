import math

import pytest
import torch

from stnkit.losses import (
    attended_box,
    box_iou,
    decode_sequence,
    digit_accuracy,
    sequence_accuracy,
    sequence_loss,
    triplet_hinge_loss,
)
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


def sequence_nll_loop(length_logits, digit_logits, length, digits):
    """-log P(L) - sum_i log P(S_i) per sequence, from the softmax written out, in float64."""
    out = []
    for n in range(length_logits.shape[0]):
        def nll(logits, target):
            z = [float(v) for v in logits]
            return math.log(sum(math.exp(v) for v in z)) - z[int(target)]
        total = nll(length_logits[n], length[n])
        for i in range(digit_logits.shape[1]):
            total += nll(digit_logits[n, i], digits[n, i])
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def decode_loop(length_logits, digit_logits):
    """Best (length, digits) by enumerating every length, float64."""
    lp_len = torch.log_softmax(length_logits.double(), 1)
    lp = torch.log_softmax(digit_logits.double(), 2)
    lengths, seqs = [], []
    for n in range(lp.shape[0]):
        scores = []
        for L in range(lp.shape[1] + 1):
            s = float(lp_len[n, L])
            s += sum(float(lp[n, i, :-1].max()) for i in range(L))
            s += sum(float(lp[n, i, -1]) for i in range(L, lp.shape[1]))
            scores.append(s)
        L = max(range(len(scores)), key=lambda j: (scores[j], -j))
        lengths.append(L)
        seqs.append([int(lp[n, i, :-1].argmax()) if i < L else lp.shape[2] - 1 for i in range(lp.shape[1])])
    return torch.tensor(lengths), torch.tensor(seqs)


def _heads(digit_classes):
    """Length logits (1, 6) and digit logits (1, 5, 11) with one confident class per head."""
    length, digits = torch.full((1, 6), -20.0), torch.full((1, 5, 11), -20.0)
    for i, c in enumerate(digit_classes):
        digits[0, i, c] = 0.0
    length[0, sum(c != 10 for c in digit_classes)] = 0.0
    return length, digits


class TestSequenceLoss:
    def test_uniform(self):
        loss = sequence_loss(torch.zeros(3, 6), torch.zeros(3, 5, 11), torch.tensor([1, 2, 5]),
                             torch.tensor([[3] + [10] * 4, [1, 2] + [10] * 3, [1, 2, 3, 4, 5]]))
        assert loss.item() == pytest.approx(math.log(6) + 5 * math.log(11), rel=1e-6)

    def test_matches_reference(self):
        g = torch.Generator().manual_seed(0)
        ll, dl = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 5, 11, generator=g,
                                                                                  dtype=torch.float64)
        length = torch.tensor([1, 3, 5, 2])
        digits = torch.tensor([[7] + [10] * 4, [0, 0, 1, 10, 10], [9, 8, 7, 6, 5], [4, 4, 10, 10, 10]])
        ref = sequence_nll_loop(ll, dl, length, digits)
        torch.testing.assert_close(sequence_loss(ll, dl, length, digits, reduction="none"), ref)
        torch.testing.assert_close(sequence_loss(ll, dl, length, digits, reduction="sum"), ref.sum())
        torch.testing.assert_close(sequence_loss(ll, dl, length, digits), ref.mean())

    def test_gradcheck(self):
        ll = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
        dl = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
        length, digits = torch.tensor([2, 1]), torch.tensor([[1, 2, 10, 10, 10], [0, 10, 10, 10, 10]])
        assert torch.autograd.gradcheck(lambda a, b: sequence_loss(a, b, length, digits), (ll, dl))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"length_logits must have shape \(2, 6\)"):
            sequence_loss(torch.zeros(2, 5), torch.zeros(2, 5, 11), torch.zeros(2).long(), torch.zeros(2, 5).long())
        with pytest.raises(ValueError, match="targets must be"):
            sequence_loss(torch.zeros(2, 6), torch.zeros(2, 5, 11), torch.zeros(3).long(), torch.zeros(2, 5).long())
        with pytest.raises(ValueError, match=r"digit_logits must have shape \(N, K, D\)"):
            sequence_loss(torch.zeros(2, 6), torch.zeros(2, 55), torch.zeros(2).long(), torch.zeros(2, 5).long())
        with pytest.raises(ValueError, match="unknown reduction"):
            sequence_loss(torch.zeros(1, 6), torch.zeros(1, 5, 11), torch.ones(1).long(), torch.ones(1, 5).long(),
                          reduction="max")


class TestDecodeSequence:
    def test_joint_not_per_head(self):
        length = torch.log(torch.tensor([[0.01, 0.01, 0.01, 0.95, 0.01, 0.01]]))  # length 3, confidently
        digits = torch.full((1, 5, 11), -9.0)
        digits[0, 0, 4] = digits[0, 1, 2] = 0.0
        digits[0, 2, 7], digits[0, 2, 10] = 0.0, 0.3  # position 2 leans to "no digit"...
        digits[0, 3:, 10] = 0.0
        n, d = decode_sequence(length, digits)  # ...but the length head outweighs it
        assert n.tolist() == [3]
        assert d.tolist() == [[4, 2, 7, 10, 10]]

    def test_matches_enumeration(self):
        g = torch.Generator().manual_seed(1)
        ll, dl = 3 * torch.randn(50, 6, generator=g), 3 * torch.randn(50, 5, 11, generator=g)
        n, d = decode_sequence(ll, dl)
        n_ref, d_ref = decode_loop(ll, dl)
        assert torch.equal(n, n_ref)
        assert torch.equal(d, d_ref)


class TestSequenceAccuracy:
    def test_hand_cases(self):
        preds = [_heads([1, 2, 10, 10, 10]), _heads([1, 3, 10, 10, 10]), _heads([1, 2, 5, 10, 10]),
                 _heads([1, 10, 10, 10, 10])]
        ll, dl = torch.cat([p[0] for p in preds]), torch.cat([p[1] for p in preds])
        length, digits = torch.tensor([2, 2, 2, 2]), torch.tensor([[1, 2, 10, 10, 10]] * 4)
        # right / wrong digit / extra digit / missing digit
        assert sequence_accuracy(ll, dl, length, digits).item() == pytest.approx(0.25)
        # true digits right at their position: 2 + 1 + 2 + 1 of 8
        assert digit_accuracy(ll, dl, length, digits).item() == pytest.approx(6 / 8)

    def test_perfect_and_empty(self):
        ll, dl = _heads([3, 1, 4, 1, 5])
        truth = (torch.tensor([5]), torch.tensor([[3, 1, 4, 1, 5]]))
        assert sequence_accuracy(ll, dl, *truth).item() == 1.0
        assert digit_accuracy(ll, dl, *truth).item() == 1.0
        assert digit_accuracy(ll, dl, torch.tensor([0]), torch.full((1, 5), 10)).item() == 0.0
