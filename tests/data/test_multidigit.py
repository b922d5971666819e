"""The multi-digit MNIST proxy: sample format, determinism, geometry of the placed digits."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from stnkit.data.multidigit import MultiDigitMNIST


@pytest.fixture(scope="module")
def pool(mnist_dir):
    from stnkit.data.idx import load_mnist

    images, labels = load_mnist(mnist_dir, split="test")
    return images[:500], labels[:500]


def _ds(pool, n=64, **kw):
    return MultiDigitMNIST(pool[0], pool[1], n, **kw)


class TestMultiDigitMNIST:
    def test_format(self, pool):
        batch = _ds(pool).generate(range(64))
        assert batch.images.shape == (64, 1, 64, 64)
        assert batch.images.dtype == torch.float32
        assert float(batch.images.min()) >= 0.0
        assert float(batch.images.max()) <= 1.0
        assert batch.length.dtype == batch.digits.dtype == torch.int64
        assert set(batch.length.tolist()) <= {1, 2, 3, 4, 5}
        past_end = torch.arange(5) >= batch.length[:, None]  # (B, 5)
        assert torch.all(batch.digits[past_end] == 10)
        assert torch.all(batch.digits[~past_end] < 10)

    def test_lengths_uniform(self, pool):
        counts = torch.bincount(_ds(pool, 2000).generate(range(2000)).length, minlength=6)
        assert counts[0] == 0
        assert torch.all((counts[1:] > 330) & (counts[1:] < 470)), counts  # 400 each, +-5 sigma

    def test_deterministic(self, pool):
        ds = _ds(pool, seed=5)
        batch = ds.get_batch([7, 3, 11])
        for row, i in enumerate([7, 3, 11]):
            alone = ds[i]
            for a, b in zip(alone, batch):
                assert torch.equal(a, b[row])
        again = _ds(pool, seed=5).get_batch([3])
        assert torch.equal(again[0][0], batch[0][1])
        assert not torch.equal(_ds(pool, seed=6)[3][0], batch[0][1])
        assert not torch.equal(_ds(pool, seed=5, split="test")[3][0], batch[0][1])

    def test_epochs(self, pool):
        fixed, fresh = _ds(pool), _ds(pool, fresh=True)
        a, b = fixed[0][0], fresh[0][0]
        fixed.set_epoch(1)
        fresh.set_epoch(1)
        assert torch.equal(fixed[0][0], a)
        assert not torch.equal(fresh[0][0], b)

    def test_digits_inside_their_boxes(self, pool):
        ds = _ds(pool, 200, clutter=0)
        batch = ds.generate(range(200))
        ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")  # pixel centres
        for img, boxes, n in zip(batch.images[:, 0], batch.boxes, batch.length):
            inside = torch.zeros(64, 64, dtype=torch.bool)
            for x0, y0, x1, y1 in boxes[:n].tolist():
                assert 0 <= x0 < x1 <= 64  # the row is inside the canvas
                assert 0 <= y0 < y1 <= 64
                box = (xs > x0 - 1.5) & (xs < x1 + 1.5) & (ys > y0 - 1.5) & (ys < y1 + 1.5)  # + bilinear footprint
                assert img[box].sum() > 2.0  # each box holds a digit's ink
                inside |= box
            assert img[~inside].sum() < 0.05 * img.sum()  # MNIST ink leaves the 20x20 core only a little
            centres = (boxes[:n, 0] + boxes[:n, 2]) / 2
            assert torch.all(centres[1:] > centres[:-1])  # targets are in reading order

    def test_max_length(self, pool):
        batch = _ds(pool, 600, max_length=3).generate(range(600))
        counts = torch.bincount(batch.length, minlength=6)
        assert counts[0] == counts[4] == counts[5] == 0
        assert torch.all((counts[1:4] > 150) & (counts[1:4] < 250)), counts  # 200 each, +-3.5 sigma
        assert torch.all(batch.digits[:, 3:] == 10)

    def test_shift(self, pool):
        def centres(**kw):
            b = _ds(pool, 200, clutter=0, rotation=(0.0, 0.0), jitter=0.0, **kw).generate(range(200))
            first, last = b.boxes[:, 0], b.boxes[torch.arange(200), b.length - 1]
            return torch.stack([(first[:, 0] + last[:, 2]) / 2, (first[:, 1] + first[:, 3]) / 2], 1)  # (B, 2) px

        torch.testing.assert_close(centres(shift=0.0), torch.full((200, 2), 32.0), atol=1e-4, rtol=0)
        full, half = centres() - 32, centres(shift=0.5) - 32
        torch.testing.assert_close(half, full / 2, atol=1e-4, rtol=0)  # same draws, half the room
        assert float(full.abs().max()) > 10  # rows move over most of the canvas by default

    def test_labels_follow_the_pool(self, pool):
        images, labels = pool
        ones = MultiDigitMNIST(images, torch.full_like(labels, 7), 20)
        batch = ones.generate(range(20))
        assert torch.all(batch.digits[torch.arange(5) < batch.length[:, None]] == 7)

    def test_clutter(self, pool):
        clean = _ds(pool, clutter=0).generate(range(32)).images
        cluttered = _ds(pool, clutter=6).generate(range(32)).images
        assert torch.all(cluttered >= clean)  # clutter combines by max
        assert cluttered.sum() > clean.sum()

    def test_dataloader(self, pool):
        loader = DataLoader(_ds(pool), batch_size=16)
        images, length, digits = next(iter(loader))
        assert images.shape == (16, 1, 64, 64)
        assert length.shape == (16,)
        assert digits.shape == (16, 5)
        assert torch.equal(images, _ds(pool).get_batch(range(16))[0])

    def test_errors(self, pool):
        images, labels = pool
        with pytest.raises(ValueError, match="images must be a non-empty uint8 tensor"):
            MultiDigitMNIST(images.float(), labels, 4)
        with pytest.raises(ValueError, match="labels must have shape"):
            MultiDigitMNIST(images, labels[:3], 4)
        with pytest.raises(ValueError, match="fresh sequences are for training only"):
            MultiDigitMNIST(images, labels, 4, split="test", fresh=True)
        with pytest.raises(ValueError, match="scale must be"):
            MultiDigitMNIST(images, labels, 4, scale=(1.0, 0.5))
        with pytest.raises(ValueError, match=r"shift must be in \[0, 1\]"):
            MultiDigitMNIST(images, labels, 4, shift=1.5)
        with pytest.raises(ValueError, match=r"max_length must be in \[1, 5\]"):
            MultiDigitMNIST(images, labels, 4, max_length=6)
        with pytest.raises(IndexError, match=r"indices must be in \[0, 4\)"):
            MultiDigitMNIST(images, labels, 4).generate([4])
