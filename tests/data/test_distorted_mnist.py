import pytest
import torch
from torch.utils.data import DataLoader

from stnkit.data.distorted_mnist import DistortedMNIST, EpochSampler, measure_rate


@pytest.fixture
def labels(digits):
    return torch.arange(len(digits)) % 10


class TestDistortedMNIST:
    @pytest.mark.parametrize("kind", ["plain", "r", "rts", "p", "e", "tc"])
    def test_item_equals_batch_row(self, kind, digits, labels):
        ds = DistortedMNIST(digits, labels, kind, seed=3, fresh=True)
        ds.set_epoch(2)
        idx = [7, 1999, 0, 123]
        images, ys = ds.get_batch(idx)
        s = ds.image_size
        assert images.shape == (4, 1, s, s)
        assert images.dtype == torch.float32
        assert ys.tolist() == [labels[i] for i in idx]
        for row, i in enumerate(idx):
            x, y = ds[i]
            assert torch.allclose(x, images[row], atol=1e-6)
            assert int(y) == int(labels[i])

    def test_dataloader_batched_fetch(self, digits, labels):
        ds = DistortedMNIST(digits[:100], labels[:100], "rts")
        calls = []
        original = ds.get_batch
        ds.get_batch = lambda indices, epoch=None: calls.append(len(indices)) or original(indices, epoch)
        x, y = next(iter(DataLoader(ds, batch_size=32)))
        assert calls == [32]  # one generation call (one warp) for the whole batch
        assert x.shape == (32, 1, 42, 42)
        assert torch.allclose(x, original(range(32))[0], atol=1e-6)
        assert torch.equal(y, labels[:32])

    def test_fresh_changes_per_epoch(self, digits, labels):
        ds = DistortedMNIST(digits[:16], labels[:16], "rts", fresh=True)
        e0 = ds.get_batch(range(16))[0]
        ds.set_epoch(1)
        e1 = ds.get_batch(range(16))[0]
        assert not torch.allclose(e0, e1)
        assert torch.equal(ds.get_batch(range(16), epoch=0)[0], e0)  # any epoch can be regenerated

    @pytest.mark.parametrize("split", ["train", "test"])
    def test_fixed_sets_ignore_epoch(self, digits, labels, split):
        ds = DistortedMNIST(digits[:16], labels[:16], "rts", split=split, fresh=False)
        e0 = ds.get_batch(range(16))[0]
        ds.set_epoch(5)
        assert torch.equal(ds.get_batch(range(16))[0], e0)

    def test_test_sets_are_never_fresh(self, digits, labels):
        with pytest.raises(ValueError, match="training only"):
            DistortedMNIST(digits, labels, "rts", split="test", fresh=True)

    def test_ids_key_the_distortion(self, digits, labels):
        full = DistortedMNIST(digits, labels, "rts")
        ids = torch.tensor([5, 50, 500])
        subset = DistortedMNIST(digits[ids], labels[ids], "rts", ids=ids)
        assert torch.allclose(subset.get_batch([0, 1, 2])[0], full.get_batch(ids)[0], atol=1e-6)

    def test_generate_returns_params_and_boxes(self, digits, labels):
        ds = DistortedMNIST(digits, labels, "rts")
        out = ds.generate([0, 1], with_boxes=True)
        assert set(out.params) == {"angle", "scale", "translation"}
        assert out.theta.shape == (2, 6)
        assert out.boxes.shape == (2, 4)

    def test_errors(self, digits, labels):
        with pytest.raises(ValueError, match="uint8"):
            DistortedMNIST(digits.float(), labels)
        with pytest.raises(ValueError, match="labels must have shape"):
            DistortedMNIST(digits, labels[:5])
        with pytest.raises(ValueError, match="ids must have shape"):
            DistortedMNIST(digits, labels, ids=torch.arange(3))
        with pytest.raises(ValueError, match="unknown distortion"):
            DistortedMNIST(digits, labels, "rst")

    def test_measure_rate(self, digits):
        assert measure_rate(digits, "rts", batch_size=64, repeats=2) > 0


class TestEpochSampler:
    def test_order_per_epoch(self, digits, labels):
        ds = DistortedMNIST(digits[:50], labels[:50], "rts", fresh=True)
        s = EpochSampler(ds, seed=1)
        first = list(s)
        assert sorted(first) == list(range(50))
        assert first != list(range(50))
        assert list(s) == first
        s.set_epoch(1)
        assert ds.epoch == 1  # the dataset follows the sampler's epoch
        assert list(s) != first
        assert list(EpochSampler(ds, seed=2)) != first
        assert list(EpochSampler(ds, shuffle=False)) == list(range(50))

    def test_start_skips(self):
        done = [0]
        s = EpochSampler(range(10), seed=0, start=lambda: done[0])
        full = list(s)
        done[0] = 4
        assert list(s) == full[4:]
        assert len(s) == 10


class TestEpochSamplerSharding:
    def test_ranks_partition_the_epoch(self):
        from stnkit.data import EpochSampler

        shards = [EpochSampler(range(11), seed=3, num_replicas=2, rank=r) for r in range(2)]
        for s in shards:
            s.set_epoch(2)
        a, b = (list(s) for s in shards)
        assert len(a) == len(b) == len(shards[0]) == 6  # 11 padded to 12
        assert set(a) | set(b) == set(range(11))
        single = EpochSampler(range(11), seed=3)
        single.set_epoch(2)
        order = list(single)
        assert a == (order + order[:1])[0::2]
        assert b == (order + order[:1])[1::2]

    def test_epoch_changes_shard_and_lightning_does_not_wrap_it(self):
        from torch.utils.data import DistributedSampler

        from stnkit.data import EpochSampler

        s = EpochSampler(range(100), seed=0, num_replicas=4, rank=1)
        first = list(s)
        s.set_epoch(1)
        assert list(s) != first
        assert isinstance(s, DistributedSampler)  # Lightning leaves DistributedSampler subclasses unwrapped
        assert (s.num_replicas, s.rank) == (4, 1)

    def test_bad_rank(self):
        import pytest

        from stnkit.data import EpochSampler

        with pytest.raises(ValueError, match="rank must be in"):
            EpochSampler(range(4), num_replicas=2, rank=2)
