"""MNIST addition (Jaderberg et al. 2015, App. A.1): two independently RTS-distorted digits, label = their sum.

Sample i is a 2-channel 42x42 image: channel 0 is digit i, channel 1 a partner digit drawn from the same set, each
placed with its own rotation (+-45 deg), scale (0.7-1.2) and translation (the RTS generator of
:mod:`stnkit.data.distortions`); the target is ``label_i + label_partner`` (19 classes, 0-18). Both channels of a
batch are rendered with one warp.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit.data import rng
from stnkit.data.distorted_mnist import DistortedMNIST
from stnkit.data.distortions import DistortedBatch, render, sample_params

__all__ = ["AdditionMNIST"]

_PARTNER = 102  # RNG stream of the partner choice (the distortion streams are 1-6)


class AdditionMNIST(DistortedMNIST):
    """Two-digit addition: a 2-channel image of two independently distorted digits, labelled with their sum.

    Takes the arguments of :class:`~stnkit.data.DistortedMNIST` (``distortion`` defaults to the paper's RTS,
    applied to each channel). The partner of sample i and both channels' distortions are pure functions of (seed,
    split, epoch when ``fresh``, ``ids[i]``); partners are positions in this dataset, so a subset pairs within
    itself. Each channel has its own RNG key, so the two channels never share draws.

    Items are ``(image, label)``: image float32 (2, S, S) in [0, 1], label int64 scalar in [0, 18].

    Example:
        >>> digits = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
        >>> ds = AdditionMNIST(digits, torch.arange(10), seed=1)
        >>> x, y = ds.get_batch([0, 3])
        >>> x.shape, bool(torch.equal(x[1], ds[3][0]))
        (torch.Size([2, 2, 42, 42]), True)
    """

    in_channels = 2
    num_classes = 19

    def partners(self, indices: Sequence[int] | Tensor, epoch: int | None = None) -> Tensor:
        """Return the dataset positions (B,) of the second digits of the samples at ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        u = rng.uniform(self.key(epoch), self.ids[idx], 1, _PARTNER, torch.float64)[:, 0]  # (B,)
        return (u * len(self)).long().clamp_max(len(self) - 1)

    def generate_pair(self, indices: Sequence[int] | Tensor, epoch: int | None = None
                      ) -> tuple[DistortedBatch, Tensor]:
        """Render both channels of a batch in one warp.

        Args:
            indices: dataset positions, length B.
            epoch: epoch to generate (default the current one).

        Returns:
            The rendered digits as a :class:`~stnkit.data.DistortedBatch` of 2B rows (the B first digits, then
            the B partners; ``images`` (2B, 1, S, S)), and the partners' positions (B,).
        """
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        partner = self.partners(idx, epoch)  # (B,)
        key = self.key(epoch)
        params = []
        for channel, pos in enumerate((idx, partner)):
            boxes = self._digit_boxes()[pos] if self.config.translate else None
            # keyed on the sample's own id (not the partner's): two samples sharing a partner still differ
            params.append(sample_params(self.config, self.images[pos], self.ids[idx], key=rng.derive_key(key, channel),
                                        clutter_pool_size=self.clutter_pool.shape[0], digit_boxes=boxes))
        both = {k: torch.cat([params[0][k], params[1][k]]) for k in params[0]}  # 2B rows each
        digits = torch.cat([self.images[idx], self.images[partner]])  # (2B, H, W)
        return render(self.config, digits, both, clutter_pool=self.clutter_pool), partner

    def get_batch(self, indices: Sequence[int] | Tensor, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(images (B, 2, S, S) float32, sums (B,) int64)`` for dataset positions ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        batch, partner = self.generate_pair(idx, epoch)
        b = idx.shape[0]
        images = batch.images.view(2, b, *batch.images.shape[2:]).transpose(0, 1)  # (B, 2, S, S)
        return images.contiguous(), self.labels[idx] + self.labels[partner]
