import pytest
import torch

from stnkit.data.coloc import CANVAS_SIZE, coloc_config, make_coloc_set, random_crop_params, select_class
from stnkit.data.distortions import ink_boxes
from stnkit.data.idx import load_mnist


@pytest.fixture(scope="module")
def train_digits(mnist_dir):
    return load_mnist(mnist_dir, split="train")[0][:5000]


class TestSelectClass:
    def test_class_and_determinism(self, mnist_test):
        images, labels = mnist_test
        idx = select_class(labels, 3, 100, seed=0)
        assert idx.shape == (100,)
        assert torch.all(labels[idx] == 3)
        assert len(set(idx.tolist())) == 100
        assert torch.equal(idx, select_class(labels, 3, 100, seed=0))
        assert not torch.equal(idx, select_class(labels, 3, 100, seed=1))
        # a pure function of (seed, index): a subset of the labels containing the chosen ones gives the same choice
        pool = torch.cat([idx, torch.nonzero(labels == 3).flatten()]).unique()
        sub = torch.full_like(labels, -1)
        sub[pool] = 3
        assert torch.equal(select_class(sub, 3, 100, seed=0), idx)

    def test_errors(self):
        with pytest.raises(ValueError, match="only 2 images of class 1"):
            select_class(torch.tensor([1, 1, 0]), 1, 5)


class TestMakeColocSet:
    @pytest.mark.parametrize("kind", ["t", "tc"])
    def test_boxes_exact(self, mnist_test, train_digits, kind):
        images, labels = mnist_test
        s = make_coloc_set(images, labels, 7, kind=kind, n=40, seed=3, clutter_pool=train_digits)
        assert s.images.shape == (40, 1, CANVAS_SIZE, CANVAS_SIZE)
        assert s.digit == 7
        assert torch.all(labels[s.indices] == 7)
        # whole-pixel 28x28 frames
        assert torch.equal(s.boxes, s.boxes.round())
        assert torch.all(s.boxes[:, 2:] - s.boxes[:, :2] == 28)
        # the digit's ink box, shifted by the frame's corner, is the rendered ink box
        digit_ink = ink_boxes(images[s.indices])
        assert torch.equal(digit_ink + s.boxes[:, :2].long().repeat(1, 2), s.ink_boxes)
        # inside the frame (where it lies in the canvas) the canvas is the digit, exactly (clutter can only add)
        for i in range(40):
            x0, y0, x1, y1 = s.boxes[i].long().tolist()
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, CANVAS_SIZE), min(y1, CANVAS_SIZE)
            crop = s.images[i, 0, cy0:cy1, cx0:cx1]
            digit = images[s.indices[i]].float()[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] / 255
            if kind == "t":
                assert torch.equal(crop, digit)
            else:
                assert torch.all(crop >= digit)  # clutter is max-combined
        if kind == "t":  # nothing but the digit
            assert s.images.sum() == pytest.approx(sum(float(images[j].float().sum()) / 255 for j in s.indices))

    def test_clutter_present(self, mnist_test, train_digits):
        images, labels = mnist_test
        t = make_coloc_set(images, labels, 2, kind="t", n=10, seed=0)
        tc = make_coloc_set(images, labels, 2, kind="tc", n=10, seed=0, clutter_pool=train_digits)
        assert torch.equal(t.indices, tc.indices)
        assert torch.equal(t.boxes, tc.boxes)
        assert torch.all(tc.images >= t.images)
        assert tc.images.sum() > t.images.sum()

    def test_determinism_per_index(self, mnist_test):
        images, labels = mnist_test
        a = make_coloc_set(images, labels, 5, n=30, seed=1)
        b = make_coloc_set(images, labels, 5, n=10, seed=1)  # a subset of the same choice
        pos = torch.searchsorted(a.indices, b.indices)
        assert torch.equal(a.indices[pos], b.indices)
        assert torch.equal(a.images[pos], b.images)
        assert torch.equal(a.boxes[pos], b.boxes)
        c = make_coloc_set(images, labels, 5, n=30, seed=2)
        assert not torch.equal(a.boxes, c.boxes)

    def test_placement_covers_canvas(self, mnist_test):
        images, labels = mnist_test
        s = make_coloc_set(images, labels, 0, n=200, seed=0)
        centre = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
        assert centre.min() < 25
        assert centre.max() > 59

    def test_errors(self, mnist_test):
        images, labels = mnist_test
        with pytest.raises(ValueError, match="clutter_pool"):
            make_coloc_set(images, labels, 1, kind="tc", n=5)
        with pytest.raises(ValueError, match="unknown co-localisation kind"):
            coloc_config("x")


class TestRandomCropParams:
    def test_inside_canvas(self):
        p = random_crop_params(500, 28, 84, torch.Generator().manual_seed(0))
        assert p.shape == (500, 3)
        assert torch.allclose(p[:, 0], torch.tensor(1 / 3))
        assert p[:, 1:].abs().max() <= 2 / 3
        assert p[:, 1:].abs().max() > 0.6
