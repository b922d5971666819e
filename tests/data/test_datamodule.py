import subprocess
import sys

import pytest
import torch

from stnkit.data import DistortedMNISTDataModule
from tests._mnist_like import N_TEST, N_TRAIN


def _dm(mnist_dir, **kwargs):
    kwargs = {"data_dir": str(mnist_dir), "train_subset": 64, "val_subset": 32, "test_subset": 32,
              "batch_size": 16, **kwargs}
    dm = DistortedMNISTDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def dm(mnist_dir):
    return _dm(mnist_dir)


class TestDistortedMNISTDataModule:
    def test_loaders(self, dm):
        assert (dm.image_size, dm.in_channels, dm.num_classes) == (42, 1, 10)
        x, y = next(iter(dm.train_dataloader()))
        assert x.shape == (16, 1, 42, 42)
        assert x.dtype == torch.float32
        assert y.shape == (16,)
        assert y.dtype == torch.int64
        assert float(x.min()) >= 0
        assert float(x.max()) <= 1
        assert [len(dm.train_dataloader()), len(dm.val_dataloader()), len(dm.test_dataloader())] == [4, 2, 2]
        assert sum(len(b[1]) for b in dm.val_dataloader()) == 32

    def test_split(self, mnist_dir):
        dm = _dm(mnist_dir, train_subset=None, val_subset=None, test_subset=None, val_size=5000)
        train, val = set(dm.train_set.ids.tolist()), set(dm.val_set.ids.tolist())
        assert (len(train), len(val), len(dm.test_set)) == (N_TRAIN - 5000, 5000, N_TEST)
        assert not train & val
        assert train | val == set(range(N_TRAIN))
        assert dm.val_set.split == "val"
        assert dm.test_set.split == "test"
        other = set(_dm(mnist_dir, seed=1, val_subset=None).val_set.ids.tolist())
        assert other != val  # the split is seeded

    def test_seeds(self, mnist_dir, dm):
        other = _dm(mnist_dir, seed=1)
        assert torch.equal(next(iter(other.test_dataloader()))[0], next(iter(dm.test_dataloader()))[0])
        assert not torch.equal(next(iter(_dm(mnist_dir, test_seed=1).test_dataloader()))[0],
                               next(iter(dm.test_dataloader()))[0])
        assert not torch.equal(other.train_set.get_batch([0])[0], dm.train_set.get_batch([0])[0])

    @pytest.mark.parametrize("fresh", [True, False])
    def test_fresh_train(self, mnist_dir, fresh):
        dm = _dm(mnist_dir, fresh_train=fresh)
        loader = dm.train_dataloader()
        epoch0 = dm.train_set.get_batch(range(16))[0]
        loader.sampler.set_epoch(1)  # what Lightning does at every epoch start
        assert torch.equal(dm.train_set.get_batch(range(16))[0], epoch0) is not fresh
        val = next(iter(dm.val_dataloader()))[0]
        assert torch.equal(next(iter(dm.val_dataloader()))[0], val)  # validation stays fixed

    def test_options(self, mnist_dir):
        dm = _dm(mnist_dir, dataset="tc", eval_batch_size=8, distortion={"clutter": 2})
        assert dm.image_size == 60
        assert dm.train_set.config.clutter == 2
        assert len(next(iter(dm.val_dataloader()))[1]) == 8
        assert dm.hparams.dataset == "tc"
        assert dm.hparams.distortion == {"clutter": 2}

    def test_errors(self, mnist_dir, tmp_path):
        with pytest.raises(ValueError, match="unknown distortion"):
            DistortedMNISTDataModule("xyz")
        with pytest.raises(ValueError, match="batch sizes"):
            DistortedMNISTDataModule(batch_size=0)
        with pytest.raises(RuntimeError, match="setup"):
            DistortedMNISTDataModule().train_dataloader()
        with pytest.raises(ValueError, match="leaves no training images"):
            _dm(mnist_dir, val_size=N_TRAIN)
        with pytest.raises(ValueError, match="lacks MNIST files"):
            DistortedMNISTDataModule(data_dir=str(tmp_path)).prepare_data()

    def test_import_is_lazy(self):
        code = "import sys, stnkit, stnkit.data; print('lightning' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False"


class _Recorder:
    """A tiny LightningModule factory recording a fingerprint of every training batch by (epoch, batch_idx)."""

    @staticmethod
    def make(seen):
        import lightning.pytorch as pl

        class Tiny(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(42 * 42, 10)

            def training_step(self, batch, batch_idx):
                x, y = batch
                seen[(self.current_epoch, batch_idx)] = (float(x.sum()), y.tolist())
                return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.01)

        return Tiny()


def _fit(mnist_dir, root, seen, ckpt_path=None, **dm_kwargs):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1, filename="{step}")],
    )
    trainer.fit(_Recorder.make(seen), datamodule=_dm(mnist_dir, val_subset=16, **dm_kwargs), ckpt_path=ckpt_path)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # Lightning 2.6 on torch 2.13 pytree
def test_resume_sees_the_same_batches(mnist_dir, tmp_path):
    full = {}
    _fit(mnist_dir, tmp_path, full)
    assert len(full) == 8  # 2 epochs x 4 batches
    assert full[(0, 0)] != full[(1, 0)]  # fresh order and distortions per epoch
    for step, first in ((2, (0, 2)), (6, (1, 2))):  # mid-epoch checkpoints of epoch 0 and epoch 1
        resumed = {}
        _fit(mnist_dir, tmp_path / f"r{step}", resumed, ckpt_path=tmp_path / f"step={step}.ckpt")
        assert min(resumed) == first
        assert resumed == {k: v for k, v in full.items() if k >= first}


class TestDeviceGeneration:
    """``generate_on="device"``: loaders carry (index, epoch, tag) recipes, the device distorts (same data)."""

    @pytest.mark.parametrize("dataset", ["rts", "tc", "addition", "mnist3d"])
    def test_recipe_batches_equal_loader_batches(self, mnist_dir, dataset):
        kwargs = {"dataset": dataset, "fresh_train": True}
        if dataset == "mnist3d":
            from stnkit.data import build_datamodule

            def make(generate_on):
                dm = build_datamodule("mnist3d", data_dir=str(mnist_dir), train_subset=16, val_subset=8,
                                      test_subset=8, batch_size=8, volume_size=24, generate_on=generate_on)
                dm.setup("fit")
                return dm
        elif dataset == "addition":
            from stnkit.data import AdditionDataModule

            def make(generate_on):
                dm = AdditionDataModule("rts", data_dir=str(mnist_dir), train_subset=16, val_subset=8,
                                        test_subset=8, batch_size=8, generate_on=generate_on)
                dm.setup("fit")
                return dm
        else:
            def make(generate_on):
                return _dm(mnist_dir, generate_on=generate_on, **kwargs)
        loader_dm, device_dm = make("loader"), make("device")
        for epoch in (0, 1):
            pairs = [(loader_dm.train_dataloader(), device_dm.train_dataloader()),
                     (loader_dm.val_dataloader(), device_dm.val_dataloader()),
                     (loader_dm.test_dataloader(), device_dm.test_dataloader())]
            pairs[0][0].sampler.set_epoch(epoch)  # training: fresh order and distortions per epoch
            pairs[0][1].sampler.set_epoch(epoch)
            for want_loader, recipe_loader in pairs:
                for want, recipe in zip(want_loader, recipe_loader, strict=True):
                    assert len(recipe) == 3  # indices, epochs, tags: no images
                    assert all(t.dtype == torch.int64 and t.ndim == 1 for t in recipe)
                    got = device_dm.on_after_batch_transfer(recipe, 0)
                    assert len(got) == len(want)
                    for a, b in zip(got, want, strict=True):
                        assert torch.equal(a, b)

    def test_image_batches_pass_through(self, dm):
        x, y = next(iter(dm.train_dataloader()))
        out = dm.on_after_batch_transfer((x, y), 0)
        assert out[0] is x
        assert out[1] is y

    def test_auto_is_the_loader_without_a_gpu_trainer(self, dm):
        assert dm.generate_on == "auto"
        assert not dm.on_device()
        x, _ = next(iter(dm.train_dataloader()))
        assert x.dtype == torch.float32  # images, generated by the loader
        assert x.shape == (16, 1, 42, 42)

    def test_bad_choice(self, mnist_dir):
        with pytest.raises(ValueError, match="generate_on must be one of auto, loader, device"):
            DistortedMNISTDataModule(data_dir=str(mnist_dir), generate_on="gpu")

    @pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # Lightning 2.6 on torch 2.13 pytree
    def test_training_sees_the_same_batches_and_resumes(self, mnist_dir, tmp_path):
        loader, device = {}, {}
        _fit(mnist_dir, tmp_path / "loader", loader, generate_on="loader")
        _fit(mnist_dir, tmp_path / "device", device, generate_on="device")
        assert len(device) == 8
        assert device == loader
        resumed = {}
        _fit(mnist_dir, tmp_path / "r", resumed, ckpt_path=tmp_path / "device" / "step=6.ckpt", generate_on="device")
        assert resumed == {k: v for k, v in loader.items() if k >= (1, 2)}
