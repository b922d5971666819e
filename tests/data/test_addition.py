import pytest
import torch

from stnkit.data import DistortedMNIST
from stnkit.data.addition import AdditionMNIST


@pytest.fixture(scope="module")
def dataset(mnist_test):
    images, labels = mnist_test
    return AdditionMNIST(images[:1000], labels[:1000], seed=4, split="train", fresh=True)


class TestAdditionMNIST:
    def test_shapes_and_sums(self, dataset):
        x, y = dataset.get_batch(torch.arange(256))
        assert x.shape == (256, 2, 42, 42)
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        partner = dataset.partners(torch.arange(256))
        assert torch.equal(y, dataset.labels[:256] + dataset.labels[partner])
        assert y.min() >= 0
        assert y.max() <= 18
        assert len(y.unique()) >= 15
        assert dataset.in_channels == 2
        assert dataset.num_classes == 19

    def test_channels_are_independent_rts_digits(self, dataset):
        idx = torch.arange(64)
        x, _ = dataset.get_batch(idx)
        batch, partner = dataset.generate_pair(idx)
        # each channel is its digit placed by the RTS generator with that channel's own parameters
        assert torch.equal(x[:, 0], batch.images[:64, 0])
        assert torch.equal(x[:, 1], batch.images[64:, 0])
        angle = batch.params["angle"]
        assert angle.abs().max() <= 45
        assert not torch.allclose(angle[:64], angle[64:])
        scale = batch.params["scale"]
        assert scale.min() >= 0.7
        assert scale.max() <= 1.2
        # channel 0 carries the sample's digit: its ink matches a plain RTS rendering of that digit's mass roughly
        mass = x.sum(dim=(2, 3))  # (B, 2)
        digit_mass = dataset.images[idx].float().sum(dim=(1, 2)) / 255
        ratio = mass[:, 0] / digit_mass / batch.params["scale"][:64] ** 2  # area scales with s^2
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.15)
        partner_mass = dataset.images[partner].float().sum(dim=(1, 2)) / 255
        ratio = mass[:, 1] / partner_mass / batch.params["scale"][64:] ** 2
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.15)

    def test_determinism_per_index(self, dataset):
        x, y = dataset.get_batch([5, 17, 900])
        for row, i in enumerate([5, 17, 900]):
            xi, yi = dataset[i]
            assert torch.equal(xi, x[row])
            assert yi == y[row]
        dataset.set_epoch(1)  # fresh: a new epoch, new partners and placements
        x1, _ = dataset.get_batch([5, 17, 900])
        dataset.set_epoch(0)
        assert not torch.equal(x, x1)
        assert torch.equal(dataset.get_batch([5, 17, 900])[0], x)

    def test_batched_fetch(self, dataset):
        items = dataset.__getitems__([3, 4])
        assert len(items) == 2
        assert items[0][0].shape == (2, 42, 42)

    def test_is_a_distorted_mnist(self, dataset):
        assert isinstance(dataset, DistortedMNIST)
        assert dataset.config.kind == "rts"
