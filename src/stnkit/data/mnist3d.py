"""3-D MNIST (Jaderberg et al. 2015, App. A.3): a digit extruded into a slab, posed at random in a 60^3 volume.

A 28x28 digit becomes a slab of ``thickness`` voxels (the digit repeated along depth), which is rotated about the
x, y and z axes by uniform random angles and translated uniformly at random so the whole slab stays inside the
volume, then resampled into the (V, V, V) volume with one :func:`stnkit.warp` call (``"affine3d"``, trilinear)
per batch. Frames: poses are drawn in centred voxel coordinates (origin at the volume centre; x along W, y along
H, z along D); a slab point p is placed at ``R p + t`` with ``R = Rz Ry Rx``.

The paper gives the task, not the pose distribution; ours (overridable): thickness 4 voxels, tilts about x and y
up to +-60 deg, in-plane rotation up to +-45 deg. Large tilts foreshorten the digit in a fixed projection along
depth, so a network that cannot re-orient the volume is at a disadvantage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stnkit.data import rng
from stnkit.data.distorted_mnist import DistortedMNIST
from stnkit.data.distortions import DistortionConfig
from stnkit.sampling import warp

__all__ = ["MNIST3D", "extrude", "render_volumes", "rotation_matrix", "sample_poses", "slab_theta"]

_ROTATION3D, _TRANSLATION3D = 103, 104  # RNG streams (the 2-D distortion streams are 1-6)


def extrude(digits: Tensor, thickness: int) -> Tensor:
    """Extrude 2-D digits into slabs by repeating them along depth.

    Args:
        digits: images (N, H, W) (uint8 0-255, or float in [0, 1]).
        thickness: D, slab depth in voxels.

    Returns:
        Float32 volumes (N, 1, D, H, W) in [0, 1].

    Example:
        >>> extrude(torch.zeros(2, 28, 28, dtype=torch.uint8), 4).shape
        torch.Size([2, 1, 4, 28, 28])
    """
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1; got {thickness}")
    x = digits.float() / 255.0 if digits.dtype == torch.uint8 else digits.float()
    return x[:, None, None].expand(-1, 1, thickness, -1, -1).contiguous()  # (N, 1, D, H, W)


def rotation_matrix(angles: Tensor) -> Tensor:
    """Return ``Rz(c) Ry(b) Rx(a)`` for angles (N, 3) = (a, b, c) in degrees, shape (N, 3, 3), float64.

    Example:
        >>> rotation_matrix(torch.tensor([[0.0, 0.0, 90.0]]))[0, :, 0].round() + 0.0  # x turns to y
        tensor([0., 1., 0.], dtype=torch.float64)
    """
    a, b, c = torch.deg2rad(angles.double()).unbind(-1)  # (N,) each
    one, zero = torch.ones_like(a), torch.zeros_like(a)

    def mat(*rows: Tensor) -> Tensor:
        return torch.stack(rows, dim=-1).view(-1, 3, 3)  # (N, 3, 3)

    rx = mat(one, zero, zero, zero, a.cos(), -a.sin(), zero, a.sin(), a.cos())
    ry = mat(b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos())
    rz = mat(c.cos(), -c.sin(), zero, c.sin(), c.cos(), zero, zero, zero, one)
    return rz @ ry @ rx


def sample_poses(
    key: int, ids: Tensor, slab_shape: Sequence[int], volume_size: int,
    rotation: Sequence[float] = (60.0, 60.0, 45.0),
) -> dict[str, Tensor]:
    """Draw random slab poses; row i depends only on (``key``, ``ids[i]``).

    Args:
        key: RNG key (``rng.derive_key(seed, split, epoch)``).
        ids: sample ids (N,).
        slab_shape: (D, H, W) of the slab.
        volume_size: V of the (V, V, V) volume.
        rotation: maximal absolute angles (degrees) about x, y and z; each angle is uniform in +-max.

    Returns:
        ``angles`` (N, 3) degrees and ``translation`` (N, 3) voxels (slab centre minus volume centre, (x, y, z)),
        float32; the translation keeps the whole slab inside the volume (centred if it cannot fit).
    """
    n = ids.shape[0]
    limit = torch.tensor([float(r) for r in rotation], dtype=torch.float64)  # (3,)
    angles = (2.0 * rng.uniform(key, ids, 3, _ROTATION3D, torch.float64) - 1.0) * limit  # (N, 3)
    d, h, w = slab_shape
    signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float64)
    corners = signs * torch.tensor([w / 2, h / 2, d / 2], dtype=torch.float64)  # (8, 3) slab corners, centred
    placed = corners @ rotation_matrix(angles).transpose(1, 2)  # (N, 8, 3)
    low = -volume_size / 2 - placed.amin(dim=1)  # (N, 3)
    high = volume_size / 2 - placed.amax(dim=1)  # (N, 3)
    mid = 0.5 * (low + high)
    low, high = torch.minimum(low, mid), torch.maximum(high, mid)
    translation = low + (high - low) * rng.uniform(key, ids, 3, _TRANSLATION3D, torch.float64)  # (N, 3)
    return {"angles": angles.float().reshape(n, 3), "translation": translation.float()}


def slab_theta(poses: dict[str, Tensor], slab_shape: Sequence[int], volume_size: int) -> Tensor:
    """Return the volume -> slab ``"affine3d"`` parameters (N, 12) of poses, normalised frames, float32.

    The warp reads the slab at ``p_slab = R^T (p_vol - t)`` (centred voxels), rescaled to each grid's [-1, 1].
    """
    d, h, w = slab_shape
    rot = rotation_matrix(poses["angles"])  # (N, 3, 3) slab -> volume
    t = poses["translation"].double()  # (N, 3)
    to_slab_norm = torch.tensor([2.0 / w, 2.0 / h, 2.0 / d], dtype=torch.float64)  # (3,) centred vox -> norm
    inv = rot.transpose(1, 2)  # (N, 3, 3) volume -> slab, centred voxels
    a = to_slab_norm[:, None] * inv * (volume_size / 2)  # (N, 3, 3) acting on normalised volume coords
    b = -to_slab_norm * (inv @ t.unsqueeze(-1)).squeeze(-1)  # (N, 3)
    return torch.cat([a, b.unsqueeze(-1)], dim=2).reshape(-1, 12).float()  # (N, 12)


def render_volumes(digits: Tensor, poses: dict[str, Tensor], volume_size: int = 60, thickness: int = 4) -> Tensor:
    """Extrude digits and place them in volumes with one trilinear warp.

    Args:
        digits: images (N, H, W), uint8 or float in [0, 1].
        poses: from :func:`sample_poses`.
        volume_size: V.
        thickness: slab depth D in voxels.

    Returns:
        Volumes (N, 1, V, V, V), float32 in [0, 1].

    Example:
        >>> digits = torch.zeros(2, 28, 28)
        >>> poses = {"angles": torch.zeros(2, 3), "translation": torch.zeros(2, 3)}
        >>> render_volumes(digits, poses, 32).shape
        torch.Size([2, 1, 32, 32, 32])
    """
    slab = extrude(digits, thickness)  # (N, 1, D, H, W)
    theta = slab_theta(poses, slab.shape[2:], volume_size)  # (N, 12)
    return warp(slab, theta, "affine3d", (volume_size,) * 3).clamp_(0.0, 1.0)  # (N, 1, V, V, V)


class MNIST3D(DistortedMNIST):
    """3-D MNIST: each digit extruded into a slab at a random 3-D pose in a (V, V, V) volume.

    Takes the arguments of :class:`~stnkit.data.DistortedMNIST` (``distortion`` is applied to the 2-D digit before
    extrusion; the default ``"plain"`` leaves it as it is), plus the volume's. Poses are pure functions of (seed,
    split, epoch when ``fresh``, ``ids[i]``).

    Args:
        images: uint8 digits (N, H, W).
        labels: labels (N,).
        distortion: 2-D distortion applied before extrusion (default ``"plain"``).
        volume_size: V.
        thickness: slab depth in voxels.
        rotation: maximal absolute angles (degrees) about x, y, z.
        **kwargs: ``seed``, ``split``, ``fresh``, ``ids``, ``clutter_pool`` of :class:`DistortedMNIST`.

    Items are ``(volume (1, V, V, V) float32, label)``.

    Example:
        >>> digits = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
        >>> MNIST3D(digits, torch.arange(4), volume_size=32).get_batch([0, 1])[0].shape
        torch.Size([2, 1, 32, 32, 32])
    """

    in_channels = 1
    num_classes = 10

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        distortion: str | DistortionConfig = "plain",
        *,
        volume_size: int = 60,
        thickness: int = 4,
        rotation: Sequence[float] = (60.0, 60.0, 45.0),
        **kwargs,
    ) -> None:
        super().__init__(images, labels, distortion, **kwargs)
        if volume_size < 1 or thickness < 1 or len(rotation) != 3:
            raise ValueError(f"volume_size and thickness must be >= 1 and rotation 3 angles; got {volume_size}, "
                             f"{thickness}, {tuple(rotation)}")
        self.volume_size = int(volume_size)
        self.thickness = int(thickness)
        self.rotation = tuple(float(r) for r in rotation)

    @property
    def image_size(self) -> int:
        """V, the side of the (V, V, V) volumes."""
        return self.volume_size

    def poses(self, indices: Sequence[int] | Tensor, epoch: int | None = None) -> dict[str, Tensor]:
        """Return the poses (see :func:`sample_poses`) of the samples at dataset positions ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        side = self.config.canvas_size  # the 2-D digit's side after its distortion
        return sample_poses(self.key(epoch), self.ids[idx], (self.thickness, side, side), self.volume_size,
                            self.rotation)

    def get_batch(self, indices: Sequence[int] | Tensor, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(volumes (B, 1, V, V, V) float32, labels (B,) int64)`` for dataset positions ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        digits = self.generate(idx, epoch).images[:, 0]  # (B, H', W') the 2-D digits, distorted if asked
        return render_volumes(digits, self.poses(idx, epoch), self.volume_size, self.thickness), self.labels[idx]

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, volume={self.volume_size}, thickness={self.thickness})"
