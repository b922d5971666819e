"""Lightning data modules: distorted MNIST, and the same module over the addition and 3-D datasets.

MNIST is resolved/downloaded in ``prepare_data`` and loaded and split in ``setup``; :func:`build_datamodule`
resolves a dataset name to its module.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from stnkit.data.addition import AdditionMNIST
from stnkit.data.distorted_mnist import (
    DeferredBatches,
    DistortedMNIST,
    EpochSampler,
    distortion_config,
    generate_recipes,
    is_recipe,
)
from stnkit.data.idx import find_mnist, load_mnist
from stnkit.data.mnist3d import MNIST3D

__all__ = [
    "DATAMODULES", "GENERATE_ON", "AdditionDataModule", "DistortedMNISTDataModule", "MNIST3DDataModule",
    "build_datamodule",
]

GENERATE_ON = ("auto", "loader", "device")


class DistortedMNISTDataModule(pl.LightningDataModule):
    """Distorted MNIST (Jaderberg et al. 2015, Sec. 4.1): train / validation / test loaders of (x, y) batches.

    The validation set is ``val_size`` images held out of MNIST's 60,000 training images by a permutation seeded
    with ``seed``; the test set is MNIST's 10,000 test images. Validation and test distortions are fixed; training
    distortions are redrawn every epoch when ``fresh_train``. The test distortions depend on ``test_seed`` only, so
    runs with different ``seed`` are scored on identical test images. Clutter (``"tc"``) is cropped from the
    60,000 training digits for every split. The data at (seed, epoch, step) is a pure function of those: the order
    comes from :class:`~stnkit.data.distorted_mnist.EpochSampler` (epoch set by Lightning), and a run resumed
    mid-epoch skips the batches already done, so it sees the same batches as the uninterrupted run.

    Args:
        dataset: distortion preset: ``"plain"``, ``"r"``, ``"rts"``, ``"p"``, ``"e"`` or ``"tc"``.
        data_dir: folder holding MNIST's IDX files; default ``$STNKIT_DATA``, else the cache (downloaded if absent).
        batch_size: training batch size (the paper: 256).
        val_size: training images held out for validation.
        seed: seed of the validation split, the training order and the training/validation distortions.
        fresh_train: new training distortions every epoch (else one fixed distorted training set).
        num_workers: DataLoader worker processes (generation is fast; 0 is usually best).
        train_subset: use only this many training images (tiny runs, tests); None = all.
        val_subset: use only this many validation images; None = all ``val_size``.
        test_subset: use only this many test images; None = all 10,000.
        eval_batch_size: validation/test batch size; default ``batch_size``.
        test_seed: seed of the fixed test distortions.
        distortion: overrides of the preset's :class:`~stnkit.data.distortions.DistortionConfig` fields, e.g.
            ``{"scale": [0.5, 1.0]}``.
        generate_on: where batches are distorted: ``"loader"`` (the DataLoader, on the CPU), ``"device"`` (the
            loaders carry ``(index, epoch)`` recipes and :meth:`on_after_batch_transfer` generates each batch on the
            device it was moved to, from a copy of MNIST kept there), or ``"auto"`` (the default: ``"device"`` when
            the trainer's device is not the CPU, so a GPU is never starved by CPU-side generation). Every choice
            gives the same data: the RNG is counter-based per (seed, split, epoch, index).

    Example:
        >>> dm = DistortedMNISTDataModule("rts", batch_size=64)
        >>> dm.image_size, dm.in_channels, dm.num_classes
        (42, 1, 10)
    """

    dataset_cls: type[DistortedMNIST] = DistortedMNIST  # subclasses swap in datasets with the same constructor

    def __init__(
        self,
        dataset: str = "rts",
        data_dir: str | None = None,
        batch_size: int = 256,
        val_size: int = 5000,
        seed: int = 0,
        fresh_train: bool = True,
        num_workers: int = 0,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        eval_batch_size: int | None = None,
        test_seed: int = 0,
        distortion: dict[str, Any] | None = None,
        generate_on: str = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if generate_on not in GENERATE_ON:
            raise ValueError(f"generate_on must be one of {', '.join(GENERATE_ON)}; got {generate_on!r}")
        self.generate_on = generate_on
        self._device_sets: dict[tuple[int, str], DistortedMNIST] = {}
        self.config = distortion_config(dataset, **(distortion or {}))  # validates the name and overrides now
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"batch sizes must be positive; got {batch_size}, {eval_batch_size}")
        if val_size < 0:
            raise ValueError(f"val_size must be >= 0; got {val_size}")
        for name, value in (("train_subset", train_subset), ("val_subset", val_subset),
                            ("test_subset", test_subset), ("num_workers", num_workers)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < (0 if name == "num_workers" else 1)):
                least = "a non-negative" if name == "num_workers" else "a positive"
                raise ValueError(f"{name} must be {least} integer; got {value!r}")
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size = val_size
        self.seed = seed
        self.fresh_train = fresh_train
        self.num_workers = num_workers
        self.train_subset, self.val_subset, self.test_subset = train_subset, val_subset, test_subset
        self.test_seed = test_seed
        self.train_set: DistortedMNIST | None = None
        self.val_set: DistortedMNIST | None = None
        self.test_set: DistortedMNIST | None = None

    @property
    def image_size(self) -> int:
        """S, the side of the (S, S) images."""
        return self.config.canvas_size

    @property
    def in_channels(self) -> int:
        """Image channels (1)."""
        return 1

    @property
    def num_classes(self) -> int:
        """Number of classes (10)."""
        return 10

    def prepare_data(self) -> None:
        """Locate MNIST, downloading it into the user cache if it is nowhere to be found."""
        find_mnist(self.data_dir, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Load MNIST, split off the validation set and build the datasets (idempotent)."""
        if self.train_set is not None:
            return
        root = find_mnist(self.data_dir, download=False)
        train_images, train_labels = load_mnist(root, split="train")
        test_images, test_labels = load_mnist(root, split="test")
        n = train_images.shape[0]
        if self.val_size >= n:
            raise ValueError(f"val_size={self.val_size} leaves no training images out of {n}")
        _check_subset("train_subset", self.train_subset, n - self.val_size, f"training images ({n:,} minus "
                      f"val_size {self.val_size:,})")
        _check_subset("val_subset", self.val_subset, self.val_size, "validation images (val_size)")
        _check_subset("test_subset", self.test_subset, test_images.shape[0], "test images")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))  # (n,)
        val_ids = order[: self.val_size][: self.val_subset].sort().values
        train_ids = order[self.val_size:][: self.train_subset].sort().values
        test_ids = torch.arange(test_images.shape[0])[: self.test_subset]

        def make(images, labels, ids, split, seed, fresh):
            return self.dataset_cls(images[ids], labels[ids], self.config, seed=seed, split=split, fresh=fresh,
                                    ids=ids, clutter_pool=train_images, **self._dataset_kwargs())

        self.train_set = make(train_images, train_labels, train_ids, "train", self.seed, self.fresh_train)
        self.val_set = make(train_images, train_labels, val_ids, "val", self.seed, False)
        self.test_set = make(test_images, test_labels, test_ids, "test", self.test_seed, False)

    def _dataset_kwargs(self) -> dict[str, Any]:
        """Extra constructor arguments of ``dataset_cls`` (none for distorted MNIST)."""
        return {}

    def _batches_done(self) -> int:
        """Samples of the current epoch already trained on (non-zero only when resuming mid-epoch)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.ready * self.batch_size

    def on_device(self) -> bool:
        """Return whether batches are generated on the training device (see ``generate_on``)."""
        if self.generate_on != "auto":
            return self.generate_on == "device"
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type != "cpu"

    def _loader(self, dataset: DistortedMNIST | None, batch_size: int, sampler=None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before requesting dataloaders")
        source: Any = dataset
        if self.on_device():
            source = DeferredBatches(dataset, tag=[self.train_set, self.val_set, self.test_set].index(dataset))
        if sampler is not None:
            sampler.dataset = source  # the sampler passes the epoch on through the view
        return DataLoader(source, batch_size=batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Generate a recipe batch (``generate_on="device"``) on the device it was moved to; pass others on."""
        if not is_recipe(batch):
            return batch
        tag, device = int(batch[2][0]), batch[0].device
        if (tag, str(device)) not in self._device_sets:  # MNIST copied to the device once per split
            dataset = [self.train_set, self.val_set, self.test_set][tag]
            assert dataset is not None, "a recipe batch comes from a loader of a set-up dataset"
            self._device_sets[(tag, str(device))] = dataset.to(device)
        return generate_recipes(self._device_sets[(tag, str(device))], batch)

    def train_dataloader(self) -> DataLoader:
        """Training loader: order and distortions are functions of (seed, epoch); resumes skip done batches."""
        if self.train_set is None:
            raise RuntimeError("call setup() before requesting dataloaders")
        sampler = EpochSampler(self.train_set, shuffle=True, seed=self.seed, start=self._batches_done)
        trainer = self.trainer
        sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)  # before workers copy the dataset
        return self._loader(self.train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        """Validation loader, fixed order and distortions."""
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test loader, fixed order and distortions."""
        return self._loader(self.test_set, self.eval_batch_size)


class AdditionDataModule(DistortedMNISTDataModule):
    """MNIST addition (App. A.1): (N, 2, 42, 42) images of two RTS-distorted digits, labels their sum (19 classes).

    Takes :class:`DistortedMNISTDataModule`'s arguments; ``dataset`` is the distortion of each channel (the
    paper's ``"rts"``). See :class:`~stnkit.data.addition.AdditionMNIST`.

    Example:
        >>> dm = AdditionDataModule(batch_size=64)
        >>> dm.image_size, dm.in_channels, dm.num_classes
        (42, 2, 19)
    """

    dataset_cls = AdditionMNIST

    @property
    def in_channels(self) -> int:
        """Image channels (2: one digit each)."""
        return 2

    @property
    def num_classes(self) -> int:
        """Number of classes (19 sums, 0-18)."""
        return 19


class MNIST3DDataModule(DistortedMNISTDataModule):
    """3-D MNIST (App. A.3): (N, 1, V, V, V) volumes of extruded digits at random 3-D poses.

    Args:
        dataset: 2-D distortion applied before extrusion (default ``"plain"``: none).
        volume_size: V.
        thickness: slab depth in voxels.
        rotation: maximal absolute angles (degrees) about x, y and z.
        **kwargs: the other arguments of :class:`DistortedMNISTDataModule`.

    Example:
        >>> dm = MNIST3DDataModule(batch_size=32)
        >>> dm.image_size, dm.in_channels, dm.num_classes
        (60, 1, 10)
    """

    dataset_cls = MNIST3D

    def __init__(self, dataset: str = "plain", volume_size: int = 60, thickness: int = 4,
                 rotation: tuple[float, float, float] = (60.0, 60.0, 45.0), **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.volume_size, self.thickness, self.rotation = int(volume_size), int(thickness), tuple(rotation)

    @property
    def image_size(self) -> int:
        """V, the side of the (V, V, V) volumes."""
        return self.volume_size

    def _dataset_kwargs(self) -> dict[str, Any]:
        return {"volume_size": self.volume_size, "thickness": self.thickness, "rotation": self.rotation}


#: Dataset names beyond the distortion presets: name -> (data module class, its ``dataset`` argument).
DATAMODULES: dict[str, tuple[type[DistortedMNISTDataModule], str]] = {
    "addition": (AdditionDataModule, "rts"),
    "mnist3d": (MNIST3DDataModule, "plain"),
}


def build_datamodule(dataset: str, **kwargs: Any) -> DistortedMNISTDataModule:
    """Build the data module of a dataset name.

    Names: a distortion preset (``"rts"``, ``"tc"``, ...) or one of :data:`DATAMODULES` (``"addition"``,
    ``"mnist3d"``).

    Args:
        dataset: the name.
        **kwargs: the data module's other arguments (``batch_size``, ``data_dir``, ``distortion``, ...).

    Example:
        >>> build_datamodule("addition", batch_size=8).in_channels
        2
    """
    cls, preset = DATAMODULES.get(dataset, (DistortedMNISTDataModule, dataset))
    return cls(preset, **kwargs)


def _check_subset(name: str, value: int | None, available: int, what: str) -> None:
    if value is not None and value > available:
        raise ValueError(f"{name}={value:,} exceeds the {available:,} {what}")
