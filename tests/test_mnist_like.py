"""The generated MNIST-like data the suite runs on: MNIST's layout, digit-like statistics, deterministic."""

import gzip

import pytest
import torch

from stnkit.data.idx import load_mnist, read_idx
from tests._mnist_like import N_TEST, N_TRAIN, mnist_like, write_mnist_like


def test_folder_loads_as_mnist_and_is_flagged_as_not_mnist(mnist_dir):
    assert sorted(p.name for p in mnist_dir.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz"]
    assert sum(p.stat().st_size for p in mnist_dir.iterdir()) < 3 << 20
    assert read_idx(mnist_dir / "train-images-idx3-ubyte.gz").shape == (N_TRAIN, 28, 28)
    copy = mnist_dir.parent / "mnist_like_copy"  # a file not yet verified in this process, so its warning shows
    write_mnist_like(copy, n_train=10, n_test=10)
    with pytest.warns(UserWarning, match="not MNIST's"):
        images, labels = load_mnist(copy, split="test")
    assert images.shape == (10, 28, 28)


def test_digit_statistics():
    images, labels = mnist_like(500, seed=3)
    assert images.dtype == labels.dtype == torch.uint8
    assert torch.bincount(labels.long()).tolist() == [50] * 10
    ink = images.double()
    assert int(images.amax(dim=(1, 2)).min()) > 200  # every digit has stroke cores
    frame = torch.zeros(28, 28, dtype=torch.bool)
    frame[1:27, 1:27] = True
    assert float((images[:, ~frame] > 0).any(1).double().mean()) < 0.1  # 20x20 box, centre of mass centred
    covered = (images > 0).double().mean()
    assert 0.1 < float(covered) < 0.25  # thin strokes: MNIST's digits cover 19 % of the frame
    centres = torch.arange(28, dtype=torch.float64) + 0.5
    mass = ink.sum((1, 2))
    com = torch.stack([(ink.sum(1) * centres).sum(1) / mass, (ink.sum(2) * centres).sum(1) / mass], dim=1)
    assert float((com - 14).abs().max()) < 1.5
    rows = (images > 0).any(2).sum(1)
    assert int(rows.min()) >= 16
    assert int(rows.max()) <= 21
    means = torch.stack([ink[labels == d].mean(0) for d in range(10)]).flatten(1)
    nearest = torch.cdist(ink.flatten(1), means).argmin(1)
    assert float((nearest == labels).double().mean()) > 0.6  # classes differ: even nearest class mean is right


def test_deterministic_and_seeded(tmp_path):
    a, b = write_mnist_like(tmp_path / "a", 30, 20), write_mnist_like(tmp_path / "b", 30, 20)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert not torch.equal(mnist_like(30, seed=0)[0], mnist_like(30, seed=1)[0])
    assert torch.equal(mnist_like(30, chunk=7)[0], mnist_like(30)[0])
    raw = gzip.decompress((a / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert raw[:4] == bytes([0, 0, 8, 3])
    assert N_TEST >= 2000  # the distortion statistics use 2,000 test digits
