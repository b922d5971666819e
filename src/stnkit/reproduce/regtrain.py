"""Unsupervised registration of digit pairs: pairs, the models, one seeded resumable training loop, the metrics.

Images are (N, 1, 32, 32) in [0, 1] (MNIST's 28x28 digits zero-padded by 2 pixels so three 2x poolings divide the
size) or (N, 1, V, V, V) volumes (:func:`stnkit.data.mnist3d.render_volumes` of 2x-downsampled digits). A pair is a
moving and a fixed image of the same class; the loss is ``similarity(warped, fixed) + lam * gradient_loss(d)`` with
``d`` the dense displacement in voxels (with ``mse``, ``lam`` means what it means in VoxelMorph's MNIST tutorial).
"""

from __future__ import annotations

import importlib
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.fields import (
    AffineDenseCascade,
    DenseSpatialTransformer,
    folding_fraction,
    gradient_loss,
    grid_to_displacement,
    lncc,
    mse,
    normalized_mse,
    to_normalized,
    to_voxel,
)
from stnkit.files import atomic_torch_save, atomic_write_json
from stnkit.modules import SpatialTransformer

__all__ = ["FIXED_POSES", "MASK_THRESHOLD", "MODELS", "PAD", "SIMILARITIES", "RegistrationPairs", "UNet",
           "build_model", "dice", "digit_mask", "evaluate", "forward", "load_peer", "load_split", "make_pairs",
           "register_seed", "similarity_loss", "synthetic_digits"]

MODELS = ("affine", "dense", "diffeomorphic", "affine-dense", "voxelmorph")
PAD = 2  # 28 -> 32
LOC_FEATURES = 64
MASK_THRESHOLD = 0.5  # a digit's mask: pixels above this fraction of the image's maximum


def synthetic_digits(n: int, seed: int = 0, size: int = 28) -> tuple[Tensor, Tensor]:
    """Draw a tiny stand-in for MNIST: class c is a bar at angle 18 c degrees, jittered in place, length and width.

    Args:
        n: images.
        seed: generator seed.
        size: side of the square images.

    Returns:
        ``(images (n, size, size) uint8, labels (n,) int64)``.

    Example:
        >>> synthetic_digits(4)[0].shape
        torch.Size([4, 28, 28])
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    angle = labels.double() * torch.pi / 10 + 0.15 * (torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
    centre = (size - 1) / 2 + 3.0 * (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5)  # (n, 2) as (x, y)
    half = size * (0.25 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64))
    width = 1.2 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")  # (S, S) each
    dx = xs[None] - centre[:, 0, None, None]  # (n, S, S)
    dy = ys[None] - centre[:, 1, None, None]
    along = dx * angle.cos()[:, None, None] + dy * angle.sin()[:, None, None]
    across = -dx * angle.sin()[:, None, None] + dy * angle.cos()[:, None, None]
    ink = (1 - (across.abs() / width[:, None, None] - 0.5).clamp(0, 1)) * (along.abs() <= half[:, None, None])
    return (255 * ink).round().to(torch.uint8), labels


def make_pairs(labels: Tensor, n: int, seed: int, split: str) -> Tensor:
    """Draw ``n`` (moving, fixed) index pairs of the same class, two different images, deterministic per seed/split.

    Args:
        labels: class of every image (N,).
        n: pairs.
        seed: seed.
        split: ``"train"`` or ``"test"`` (different pairs for the same seed).

    Returns:
        Indices (n, 2) int64.

    Raises:
        ValueError: a class with a single image among the drawn movings.

    Example:
        >>> pairs = make_pairs(torch.tensor([0, 1, 0, 1]), 3, seed=0, split="train")
        >>> pairs.shape
        torch.Size([3, 2])
    """
    g = torch.Generator().manual_seed(seed * 1000 + {"train": 1, "test": 2}.get(split, 3))
    moving = torch.randint(0, labels.numel(), (n,), generator=g)
    fixed = torch.empty_like(moving)
    by_class = {int(c): (labels == c).nonzero().flatten() for c in labels.unique()}
    for i, m in enumerate(moving.tolist()):
        same = by_class[int(labels[m])]
        if same.numel() < 2:
            raise ValueError(f"class {int(labels[m])} has one image; pairs need two per class")
        j = m
        while j == m:
            j = int(same[torch.randint(0, same.numel(), (1,), generator=g)])
        fixed[i] = j
    return torch.stack([moving, fixed], dim=1)  # (n, 2)


class RegistrationPairs:
    """Images and (moving, fixed) pairs of one split; ``batch(rows)`` returns float tensors.

    Args:
        images: float images (N, 1, *spatial) in [0, 1], the movings (and the fixed ones unless ``fixed_images``).
        pairs: indices (P, 2) into ``images`` (moving) and ``fixed_images`` (fixed).
        fixed_images: the fixed images (N, 1, *spatial), e.g. the same digits at the canonical pose; default
            ``images``.
    """

    def __init__(self, images: Tensor, pairs: Tensor, fixed_images: Tensor | None = None) -> None:
        self.images = images
        self.fixed_images = images if fixed_images is None else fixed_images
        self.pairs = pairs

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def batch(self, rows: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Return ``(moving, fixed)``, each (B, 1, *spatial)."""
        idx = self.pairs[torch.as_tensor(rows, dtype=torch.int64)]  # (B, 2)
        return self.images[idx[:, 0]], self.fixed_images[idx[:, 1]]


def _digits(fields: dict[str, Any], split: str, data_dir: str | None) -> tuple[Tensor, Tensor]:
    if fields.get("digits", "mnist") == "synthetic":
        return synthetic_digits(fields[f"{split}_images"], seed={"train": 0, "test": 1}[split])
    from stnkit.data import find_mnist, load_mnist

    images, labels = load_mnist(find_mnist(data_dir, download=False), split=split)
    n = fields[f"{split}_images"]
    return images[:n], labels[:n]


FIXED_POSES = ("canonical", "random")


def load_split(fields: dict[str, Any], split: str, seed: int, data_dir: str | None) -> RegistrationPairs:
    """Build one split's images (2-D padded to 32x32, or 3-D volumes) and same-class pairs from a cell's fields.

    3-D: every moving volume is its digit's slab at a random pose (``rotation``, a translation keeping it inside);
    the fixed volume is the other digit's slab at the canonical pose (centred, unrotated) when
    ``fields["fixed_pose"]`` is ``"canonical"`` (the default), or at its own random pose when ``"random"``.
    """
    digits, labels = _digits(fields, split, data_dir)
    pairs = make_pairs(labels, fields[f"{split}_pairs"], seed, split)
    if fields["dims"] == 2:
        return RegistrationPairs(F.pad(digits.float()[:, None] / 255.0, (PAD,) * 4), pairs)  # (N, 1, 32, 32)
    from stnkit.data import rng
    from stnkit.data.mnist3d import render_volumes, sample_poses

    fixed_pose = fields.get("fixed_pose", "canonical")
    if fixed_pose not in FIXED_POSES:
        raise ValueError(f"unknown fixed_pose {fixed_pose!r}; expected one of {', '.join(FIXED_POSES)}")
    small = F.avg_pool2d(digits.float()[:, None], 2)[:, 0] / 255.0  # (N, 14, 14)
    v, t = fields["volume_size"], fields["thickness"]
    ids = torch.arange(small.shape[0])
    poses = sample_poses(rng.derive_key(0, split), ids, (t, *small.shape[1:]), v, fields["rotation"])
    moving = render_volumes(small, poses, v, t)  # (N, 1, V, V, V)
    if fixed_pose == "random":
        return RegistrationPairs(moving, pairs)
    canonical = {"angles": torch.zeros(len(ids), 3), "translation": torch.zeros(len(ids), 3)}
    return RegistrationPairs(moving, pairs, render_volumes(small, canonical, v, t))


class UNet(nn.Module):
    """A small U-Net: ``len(features)`` levels of conv-LeakyReLU, 2x max-pool down, 2x upsampling with skips.

    Args:
        dims: 2 or 3.
        in_channels: input channels (moving and fixed: 2).
        out_channels: field channels (``dims``).
        features: channels per level (e.g. (16, 32, 32): two poolings).

    Shapes:
        (N, in_channels, *spatial) -> (N, out_channels, *spatial); every size divisible by 2^(levels - 1).
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, features: Sequence[int] = (16, 32, 32)):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.mode = "bilinear" if dims == 2 else "trilinear"
        chans = [in_channels, *features]
        self.down = nn.ModuleList(nn.Sequential(conv(chans[i], chans[i + 1], 3, padding=1), nn.LeakyReLU(0.2))
                                  for i in range(len(features)))
        self.up = nn.ModuleList(nn.Sequential(conv(features[i + 1] + features[i], features[i], 3, padding=1),
                                              nn.LeakyReLU(0.2)) for i in reversed(range(len(features) - 1)))
        self.flow = conv(features[0], out_channels, 3, padding=1)  # zero-initialised by DenseSpatialTransformer

    def forward(self, x: Tensor) -> Tensor:
        """Return the field (N, out_channels, *spatial)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
            x = block(torch.cat([x, skip], dim=1))  # (N, C_up + C_skip, *spatial_level)
        return self.flow(x)


def _localization(dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(4) if dims == 2 else nn.AdaptiveAvgPool3d(2)
    return nn.Sequential(conv(2, 16, 3, padding=1, stride=2), nn.LeakyReLU(0.2),
                         conv(16, 32, 3, padding=1, stride=2), nn.LeakyReLU(0.2), pool, nn.Flatten(),
                         nn.Linear(32 * (16 if dims == 2 else 8), LOC_FEATURES), nn.LeakyReLU(0.2))


class AffineRegistration(nn.Module):
    """An affine transformer whose localisation net sees moving and fixed; it warps the moving image only.

    Args:
        dims: 2 (``"affine"``) or 3 (``"affine3d"``).
        bound: optional bound of every parameter around the identity (``SpatialTransformer(bound=...)``).
    """

    def __init__(self, dims: int, bound: float | None = None) -> None:
        super().__init__()
        self.transformer = SpatialTransformer(_localization(dims), "affine" if dims == 2 else "affine3d",
                                              in_features=LOC_FEATURES, bound=bound)

    def forward(self, moving: Tensor, fixed: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(warped, params)``."""
        params = self.transformer.predict_params(torch.cat([moving, fixed], dim=1))  # (N, P)
        return self.transformer.warp(moving, params), params


def load_peer(module: str = "voxelmorph") -> tuple[Any, str | None]:
    """Import the peer library by name: ``(module, None)``, or ``(None, one-line reason)`` when it cannot load."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the peer's own import-time deprecation notices
            return importlib.import_module(module), None
    except Exception as err:  # any import failure (missing, or a broken dependency) skips the peer row
        return None, f"{module} is not importable ({type(err).__name__}: {err}); peer row skipped"


def build_model(name: str, dims: int, features: Sequence[int], peer: Any = None,
                bound: float | None = None) -> nn.Module:
    """Build a registration model by cell name (:data:`MODELS`); ``peer`` is the voxelmorph module for its row.

    ``bound`` bounds the affine parameters around the identity (``"affine"`` and the cascade's affine stage).

    Raises:
        ValueError: an unknown name, or ``"voxelmorph"`` without ``peer``.
    """
    if name == "affine":
        return AffineRegistration(dims, bound)
    if name in ("dense", "diffeomorphic"):
        return DenseSpatialTransformer(UNet(dims, 2, dims, features), diffeomorphic=name == "diffeomorphic", steps=7)
    if name == "affine-dense":
        parametric = SpatialTransformer(_localization(dims), "affine" if dims == 2 else "affine3d",
                                        in_features=LOC_FEATURES, bound=bound)
        return AffineDenseCascade(parametric, DenseSpatialTransformer(UNet(dims, 2, dims, features)))
    if name == "voxelmorph":
        if peer is None:
            raise ValueError("model 'voxelmorph' needs the voxelmorph module (load_peer)")
        # VoxelMorph's MNIST tutorial: its U-Net with the same level widths, no integration (int_steps=0)
        return peer.nn.models.VxmPairwise(dims, 1, 1, nb_features=(*features, features[-1]), integration_steps=0)
    raise ValueError(f"unknown registration model {name!r}; expected one of {', '.join(MODELS)}")


def forward(model: Any, name: str, moving: Tensor, fixed: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run a model of :func:`build_model` on (N, 1, *spatial) pairs.

    Returns:
        ``(warped, total displacement, dense part or None)``; fields (N, d, *spatial) in voxels, (x, y[, z]) order.
    """
    size = tuple(moving.shape[2:])
    if name == "affine":
        warped, params = model(moving, fixed)
        grid = model.transformer.transform.grid(params, size)  # (N, *spatial, d)
        return warped, to_voxel(grid_to_displacement(grid)), None
    if name in ("dense", "diffeomorphic"):
        warped, d = model(moving, fixed, return_displacement=True)
        d = to_voxel(d)
        return warped, d, d
    if name == "affine-dense":
        warped, _params, dense, total = model(moving, fixed, return_parts=True)
        return warped, to_voxel(total), to_voxel(dense)
    d_ij, warped = model(moving, fixed, return_warped_source=True)  # voxelmorph: voxels, (i, j[, k]) order
    d = d_ij.flip(1)  # (N, d, *spatial) as (x, y[, z]) voxels
    return warped, d, d


SIMILARITIES = ("mse", "nmse", "lncc")


def similarity_loss(name: str, warped: Tensor, fixed: Tensor, window: int = 9) -> Tensor:
    """Return the named image dissimilarity (:data:`SIMILARITIES`, lower is better); ``window`` is LNCC's box.

    Raises:
        ValueError: an unknown name.
    """
    if name == "mse":
        return mse(warped, fixed)
    if name == "nmse":
        return normalized_mse(warped, fixed)
    if name == "lncc":
        return lncc(warped, fixed, window)
    raise ValueError(f"unknown similarity {name!r}; expected one of {', '.join(SIMILARITIES)}")


def digit_mask(images: Tensor, threshold: float = MASK_THRESHOLD) -> Tensor:
    """Return the masks ``image > threshold * max(image)`` per image (N, 1, *spatial) -> bool, same shape.

    Example:
        >>> digit_mask(torch.tensor([[[[0.2, 0.6, 1.0]]]])).tolist()
        [[[[False, True, True]]]]
    """
    peak = images.flatten(1).amax(1).view(-1, *([1] * (images.ndim - 1)))  # (N, 1, ...)
    return images > threshold * peak


def dice(a: Tensor, b: Tensor) -> Tensor:
    """Return the Dice overlap ``2 |a & b| / (|a| + |b|)`` of boolean masks (N, ...) per sample (N,) (1 if both empty).

    Example:
        >>> dice(torch.tensor([[True, True, False]]), torch.tensor([[True, False, False]]))
        tensor([0.6667])
    """
    a, b = a.flatten(1).float(), b.flatten(1).float()
    total = a.sum(1) + b.sum(1)
    return torch.where(total > 0, 2 * (a * b).sum(1) / total.clamp_min(1), torch.ones_like(total))


def evaluate(model: nn.Module, name: str, pairs: RegistrationPairs, batch_size: int = 64) -> dict[str, Any]:
    """Measure a trained model on held-out pairs: Dice and MSE before/after, folding %, forward ms per pair."""
    model.eval()
    rows = torch.arange(len(pairs))
    sums = {"dice_before": 0.0, "dice_after": 0.0, "mse_before": 0.0, "mse_after": 0.0, "folding": 0.0}
    elapsed = 0.0
    with torch.no_grad():
        forward(model, name, *pairs.batch(rows[:2]))  # warm-up (lazy layers, allocator)
        for chunk in rows.split(batch_size):
            moving, fixed = pairs.batch(chunk)
            t0 = time.perf_counter()
            warped, d, _ = forward(model, name, moving, fixed)
            elapsed += time.perf_counter() - t0
            fixed_mask = digit_mask(fixed)
            sums["dice_before"] += float(dice(digit_mask(moving), fixed_mask).sum())
            sums["dice_after"] += float(dice(digit_mask(warped), fixed_mask).sum())
            sums["mse_before"] += float((moving - fixed).square().flatten(1).mean(1).sum())
            sums["mse_after"] += float((warped - fixed).square().flatten(1).mean(1).sum())
            sums["folding"] += float(100 * folding_fraction(d, units="voxel").sum())
    n = len(pairs)
    return {**{k: v / n for k, v in sums.items()}, "ms_per_pair": 1000 * elapsed / n, "eval_batch": batch_size,
            "test_pairs": n}


def _figure_pairs(model: nn.Module, name: str, pairs: RegistrationPairs, n: int = 1) -> dict[str, Tensor]:
    moving, fixed = pairs.batch(torch.arange(min(n, len(pairs))))
    with torch.no_grad():
        warped, d, _ = forward(model, name, moving, fixed)
    return {"moving": moving, "fixed": fixed, "warped": warped, "displacement": to_normalized(d)}


def register_seed(fields: dict[str, Any], seed: int, run_dir: Path, data_dir: str | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Train one model on one seed's pairs and evaluate it; resumable from ``run_dir/checkpoints/last.pt``.

    A finished seed's ``run_dir/result.json`` is read back. The peer row returns ``{"skipped": reason}`` when
    ``fields["peer_module"]`` cannot be imported.
    """
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    name, dims = fields["model"], fields["dims"]
    peer = None
    if name == "voxelmorph":
        peer, reason = load_peer(fields.get("peer_module", "voxelmorph"))
        if peer is None:
            return {"skipped": reason}
    if fields.get("threads"):
        torch.set_num_threads(int(fields["threads"]))
    train = load_split(fields, "train", seed, data_dir)
    test = load_split(fields, "test", seed, data_dir)
    torch.manual_seed(seed)
    model = build_model(name, dims, fields["features"], peer, fields.get("bound"))
    optimizer = torch.optim.Adam(model.parameters(), lr=fields["lr"])
    order = torch.Generator().manual_seed(seed)
    ckpt = run_dir / "checkpoints" / "last.pt"
    step, train_s, losses = 0, 0.0, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order.set_state(state["order"])
        step, train_s, losses = state["step"], state["train_s"], state["losses"]
    model.train()
    t0 = time.perf_counter()
    steps, every = fields["steps"], max(1, fields.get("checkpoint_every", 200))
    while step < steps:
        rows = torch.randint(0, len(train), (fields["batch_size"],), generator=order)
        moving, fixed = train.batch(rows)
        warped, _, dense = forward(model, name, moving, fixed)
        loss = similarity_loss(fields.get("similarity", "mse"), warped, fixed, fields.get("lncc_window", 9))
        if dense is not None:
            loss = loss + fields["lam"] * gradient_loss(dense)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        if progress and step % 100 == 0:
            print(f"  {name} {dims}-D step {step}/{steps} loss {sum(losses[-100:]) / 100:.5f}", flush=True)
        if step % every == 0 or step == steps:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "order": order.get_state(), "step": step, "losses": losses,
                               "train_s": train_s + time.perf_counter() - t0}, ckpt)
    train_s += time.perf_counter() - t0
    metrics = evaluate(model, name, test, fields.get("eval_batch", 64))
    atomic_torch_save(_figure_pairs(model, name, test), run_dir / "figure_pairs.pt")
    tail = losses[-50:]
    result = {**metrics, "model": name, "dims": dims, "steps": steps, "batch_size": fields["batch_size"],
              "lr": fields["lr"], "lam": fields["lam"], "train_s": round(train_s, 1),
              "final_loss": sum(tail) / max(len(tail), 1),
              "params": sum(p.numel() for p in model.parameters()), "train_pairs": len(train)}
    atomic_write_json(done, result)
    return result
