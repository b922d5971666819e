"""The distorted-MNIST generators of Jaderberg et al. 2015 (Sec. 4.1, App. A.4), vectorised over a batch.

A batch is distorted in two pure steps: :func:`sample_params` draws each sample's parameters from a counter-based
RNG keyed on (seed, split, epoch, sample id), so any sample can be regenerated alone; :func:`render` turns digits
and parameters into canvases with *one* :func:`stnkit.warp` call (plus one scatter for clutter). :func:`distort`
does both.

Frames: geometry is drawn in *centred pixel* coordinates (origin at the image centre, x right, y down, one unit
per pixel); a digit is placed by ``canvas = s R(angle) digit + translation``. The warp receives the inverse map
(canvas -> digit) in stnkit's normalised frames (``align_corners=False``).

What the paper gives vs. what we chose (all overridable, see :data:`PRESETS`): R rotation +-90 deg; RTS rotation
+-45 deg, scale 0.7-1.2, random placement in 42x42; P scale 0.75-1.0 then projective corner noise; E scale 0.75-1.0
then a 16-point TPS perturbation; TC a 28x28 digit at a random place in 60x60 plus six 6x6 clutter crops are the
paper's. Ours: the canvases of R, P and E (42x42, digit centred), P's corner std (5 px) and E's control-point std
(1.5 px) follow re-implementations; P's noise moves the corners of the 42x42 canvas, not the digit's (see
:data:`PRESETS`); E's 4x4 control grid spans the unscaled 28x28 digit; a translation keeps the digit's ink (plus
the 1 px bilinear footprint) inside the canvas; TC's translations are whole pixels, clutter
crops come from anywhere in a 28x28 training digit and combine with the digit by max.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from stnkit.data import rng
from stnkit.sampling import warp
from stnkit.transforms import Affine, Projective, ThinPlateSpline, homography_from_points, regular_control_points

__all__ = ["KINDS", "PRESETS", "DistortedBatch", "DistortionConfig", "distort", "distortion_config", "ink_boxes",
           "render", "sample_params"]

# one RNG stream per quantity, so adding a quantity never changes the draws of another
_ANGLE, _SCALE, _TRANSLATION, _CORNERS, _TPS, _CLUTTER = range(1, 7)


@dataclass(frozen=True)
class DistortionConfig:
    """Parameters of one distortion family; start from a preset with :func:`distortion_config`.

    Args:
        kind: a label (the preset's name), used in reprs and logs.
        canvas_size: S, the output is (N, 1, S, S).
        transform: ``"affine"`` (rotation/scale/translation), ``"projective"`` (plus corner noise) or ``"tps"``
            (plus control-point noise).
        rotation: (low, high) of a uniform angle in degrees; positive turns x towards y (clockwise on screen).
        scale: (low, high) of a uniform isotropic scale.
        translate: place the digit uniformly at random such that its ink stays inside the canvas; else centred.
        snap_translation: round translations to whole pixels (exact copies for pure translations).
        corner_std: std (pixels) of the Gaussian noise on each of 4 corners (projective): see ``corner_frame``.
        corner_frame: whose corners are perturbed: ``"canvas"``, the output image's (a projective warp of the
            whole canvas, applied after placing the scaled digit), or ``"digit"``, the scaled digit frame's.
        tps_std: std (pixels) of the Gaussian noise on each TPS control point (tps).
        tps_grid: control points per side of the regular TPS grid (4 -> the paper's 16 points).
        tps_extent: half-width (pixels, canvas units) of the control grid around the canvas centre; 14 spans an
            unscaled 28x28 digit.
        clutter: number of clutter crops added per image (combined by max).
        clutter_size: side of each square clutter crop, pixels.
        mode: sampling kernel, ``"bilinear"`` or ``"nearest"``.
    """

    kind: str = "plain"
    canvas_size: int = 28
    transform: str = "affine"
    rotation: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    translate: bool = False
    snap_translation: bool = False
    corner_std: float = 0.0
    corner_frame: str = "digit"
    tps_std: float = 0.0
    tps_grid: int = 4
    tps_extent: float = 14.0
    clutter: int = 0
    clutter_size: int = 6
    mode: str = "bilinear"

    def __post_init__(self) -> None:
        if self.transform not in ("affine", "projective", "tps"):
            raise ValueError(f"transform must be 'affine', 'projective' or 'tps'; got {self.transform!r}")
        if self.corner_frame not in ("canvas", "digit"):
            raise ValueError(f"corner_frame must be 'canvas' or 'digit'; got {self.corner_frame!r}")
        if self.mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest'; got {self.mode!r}")
        for name in ("rotation", "scale"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high; got {(lo, hi)}")
            object.__setattr__(self, name, (float(lo), float(hi)))  # lists from YAML -> hashable tuples
        if self.scale[0] <= 0:
            raise ValueError(f"scale must be positive; got {self.scale}")
        if self.canvas_size < 1 or self.tps_grid < 2 or self.clutter < 0 or self.clutter_size < 1:
            raise ValueError("canvas_size and clutter_size must be >= 1, tps_grid >= 2 and clutter >= 0; got "
                             f"{self.canvas_size}, {self.clutter_size}, {self.tps_grid}, {self.clutter}")
        if self.corner_std < 0 or self.tps_std < 0 or self.tps_extent <= 0:
            raise ValueError("corner_std and tps_std must be >= 0 and tps_extent > 0")


#: The distortion families. P's corner noise moves the canvas's corners (``corner_frame="canvas"``): with 5 px on the
#: scaled digit's own corners, P came out harder than RTS (``cpu`` budget, 3,000 steps: FCN 25.9 % vs RTS 23.0 %, CNN
#: 6.1 % vs 2.6 %, ST-FCN 12.4-13.7 % vs 3.9-4.0 %), where the paper has P between R and RTS (FCN 2.1 / 3.1 / 5.2);
#: on the canvas's corners (about half the displacement at the digit) the FCN gave 12.9 %, between R's 6.2 % and
#: RTS's 23.0 %, at the paper's proportions (P/R 2.1 and RTS/R 3.7 here, 1.5 and 2.5 in the paper).
PRESETS: dict[str, dict[str, Any]] = {
    "plain": {"canvas_size": 28},
    "r": {"canvas_size": 42, "rotation": (-90.0, 90.0)},
    "rts": {"canvas_size": 42, "rotation": (-45.0, 45.0), "scale": (0.7, 1.2), "translate": True},
    "p": {"canvas_size": 42, "transform": "projective", "scale": (0.75, 1.0), "corner_std": 5.0,
          "corner_frame": "canvas"},
    "e": {"canvas_size": 42, "transform": "tps", "scale": (0.75, 1.0), "tps_std": 1.5},
    "tc": {"canvas_size": 60, "translate": True, "snap_translation": True, "clutter": 6, "clutter_size": 6,
           "mode": "nearest"},
}
KINDS = tuple(PRESETS)


def distortion_config(kind: str | DistortionConfig = "rts", **overrides: Any) -> DistortionConfig:
    """Return the preset for ``kind`` (``"plain"``, ``"r"``, ``"rts"``, ``"p"``, ``"e"``, ``"tc"``) with overrides.

    Args:
        kind: preset name (case-insensitive) or a config, which passes through (with overrides applied).
        **overrides: :class:`DistortionConfig` fields to change, e.g. ``scale=(0.5, 1.0)``.

    Returns:
        A frozen :class:`DistortionConfig`.

    Raises:
        ValueError: unknown kind or invalid field values.

    Example:
        >>> distortion_config("rts", canvas_size=56).canvas_size
        56
    """
    if isinstance(kind, DistortionConfig):
        return dataclasses.replace(kind, **overrides) if overrides else kind
    preset = PRESETS.get(kind.lower())
    if preset is None:
        raise ValueError(f"unknown distortion {kind!r}; known: {', '.join(KINDS)}")
    return DistortionConfig(kind=kind.lower(), **{**preset, **overrides})


class DistortedBatch(NamedTuple):
    """Output of :func:`distort`.

    Attributes:
        images: float32 canvases in [0, 1], shape (N, 1, S, S).
        params: the sampled parameters (see :func:`sample_params`).
        theta: the canvas->digit warp parameters, (N, P) for ``transform`` in the normalised frames.
        boxes: digit bounding boxes (N, 4) ``(x_min, y_min, x_max, y_max)`` in canvas pixels, max exclusive,
            from the digit's rendered ink (clutter excluded); None unless requested.
    """

    images: Tensor
    params: dict[str, Tensor]
    theta: Tensor
    boxes: Tensor | None


def ink_boxes(digits: Tensor) -> Tensor:
    """Return the bounding boxes of the non-zero pixels.

    Args:
        digits: images (N, H, W), any dtype.

    Returns:
        int64 tensor of shape (N, 4), ``(x_min, y_min, x_max, y_max)`` in pixels with max exclusive;
        (0, 0, 0, 0) for empty images.

    Example:
        >>> d = torch.zeros(1, 5, 5)
        >>> d[0, 1:3, 2] = 1
        >>> ink_boxes(d)
        tensor([[2, 1, 3, 3]])
    """
    ink = digits > 0  # (N, H, W)
    cols, rows = ink.any(dim=1), ink.any(dim=2)  # (N, W), (N, H)
    out = []
    for mask in (cols, rows):
        n = mask.shape[1]
        first = mask.to(torch.uint8).argmax(dim=1)  # (N,)
        last = n - mask.flip(1).to(torch.uint8).argmax(dim=1)  # (N,) exclusive
        out.append((first, last))
    box = torch.stack([out[0][0], out[1][0], out[0][1], out[1][1]], dim=1)  # (N, 4)
    return box * cols.any(dim=1, keepdim=True)  # empty -> zeros


def _linear(angle_deg: Tensor, scale: Tensor) -> Tensor:
    """Return s R(angle), digit -> canvas, shape (N, 2, 2), float64."""
    a = torch.deg2rad(angle_deg.double())
    cos, sin, s = torch.cos(a), torch.sin(a), scale.double()
    return torch.stack([s * cos, -s * sin, s * sin, s * cos], dim=-1).view(-1, 2, 2)  # (N, 2, 2)


def sample_params(
    config: DistortionConfig,
    digits: Tensor,
    ids: Tensor,
    *,
    key: int,
    clutter_pool_size: int = 0,
    digit_boxes: Tensor | None = None,
) -> dict[str, Tensor]:
    """Draw the distortion parameters of a batch; row i depends only on (``key``, ``ids[i]``, ``digits[i]``).

    Args:
        config: the distortion.
        digits: uint8 digits (N, H, W); their ink boxes bound the random placement.
        ids: sample ids (N,), int64, e.g. MNIST indices.
        key: the RNG key, ``rng.derive_key(seed, split, epoch)``.
        clutter_pool_size: M, the number of digits clutter is cropped from (needed when ``config.clutter > 0``).
        digit_boxes: precomputed ``ink_boxes(digits)`` (N, 4), to save recomputing them per batch.

    Returns:
        Dict of tensors: ``angle`` (N,) degrees; ``scale`` (N,); ``translation`` (N, 2) canvas pixels (digit
        centre minus canvas centre); for ``projective`` ``corners`` (N, 4, 2) pixel offsets of the corners
        (top-left, top-right, bottom-right, bottom-left); for ``tps`` ``tps_offsets`` (N, K, 2) pixel offsets of the
        control points' source positions; with clutter ``clutter_index`` (N, C) into the pool, ``clutter_crop``
        (N, C, 2) crop origin (x, y) in the pool digit and ``clutter_position`` (N, C, 2) canvas origin (x, y),
        int64.

    Raises:
        ValueError: clutter requested without a pool.
    """
    n, h, w = digits.shape
    s_canvas = config.canvas_size
    lo, hi = config.rotation
    angle = lo + (hi - lo) * rng.uniform(key, ids, 1, _ANGLE, torch.float64)[:, 0]  # (N,)
    lo, hi = config.scale
    scale = lo + (hi - lo) * rng.uniform(key, ids, 1, _SCALE, torch.float64)[:, 0]  # (N,)
    params = {"angle": angle.float(), "scale": scale.float()}

    translation = torch.zeros(n, 2, dtype=torch.float64)
    if config.translate:
        box = (ink_boxes(digits) if digit_boxes is None else digit_boxes).double()  # (N, 4) pixel indices
        # ink region incl. the 1 px bilinear footprint, centred digit coordinates: [x_min - 1, x_max] - (w - 1) / 2
        x0, y0 = box[:, 0] - 1 - (w - 1) / 2, box[:, 1] - 1 - (h - 1) / 2
        x1, y1 = box[:, 2] - (w - 1) / 2, box[:, 3] - (h - 1) / 2
        corners = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                               torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], dim=1)  # (N, 4, 2)
        placed = corners @ _linear(angle, scale).transpose(1, 2)  # (N, 4, 2) in canvas px around the centre
        low = -s_canvas / 2 - placed.amin(dim=1)  # (N, 2): smallest translation keeping the ink inside
        high = s_canvas / 2 - placed.amax(dim=1)  # (N, 2)
        mid = 0.5 * (low + high)
        low, high = torch.minimum(low, mid), torch.maximum(high, mid)  # too big to fit: centred
        translation = low + (high - low) * rng.uniform(key, ids, 2, _TRANSLATION, torch.float64)  # (N, 2)
        if config.snap_translation:  # whole-pixel shifts map digit pixel centres onto canvas pixel centres
            offset = ((s_canvas - torch.tensor([w, h], dtype=torch.float64)) / 2) % 1  # (2,)
            translation = torch.round(translation - offset) + offset
    params["translation"] = translation.float()

    if config.transform == "projective":
        params["corners"] = config.corner_std * rng.normal(key, ids, 8, _CORNERS).view(n, 4, 2)  # (N, 4, 2)
    elif config.transform == "tps":
        k = config.tps_grid**2
        params["tps_offsets"] = config.tps_std * rng.normal(key, ids, 2 * k, _TPS).view(n, k, 2)  # (N, K, 2)
    if config.clutter > 0:
        if clutter_pool_size < 1:
            raise ValueError("config.clutter > 0 needs a non-empty clutter pool (clutter_pool_size >= 1)")
        c, size = config.clutter, config.clutter_size
        u = rng.uniform(key, ids, 5 * c, _CLUTTER, torch.float64).view(n, c, 5)  # (N, C, 5)
        limits = torch.tensor([clutter_pool_size, w - size + 1, h - size + 1, s_canvas - size + 1,
                               s_canvas - size + 1], dtype=torch.float64).clamp_min(1)  # (5,)
        draws = (u * limits).long()  # (N, C, 5): uniform integers in [0, limit)
        params["clutter_index"] = draws[..., 0]  # (N, C)
        params["clutter_crop"] = draws[..., 1:3]  # (N, C, 2)
        params["clutter_position"] = draws[..., 3:5]  # (N, C, 2)
    return params


_MATRIX_TRANSFORMS = {"affine": Affine(), "projective": Projective()}  # stateless: built once, not per batch


@functools.lru_cache(maxsize=8)
def _tps(grid: int, extent: float, canvas: int) -> ThinPlateSpline:
    """Return the TPS transform whose control points span +-extent pixels of a canvas (normalised frame)."""
    return ThinPlateSpline(control_points=regular_control_points(grid) * (2 * extent / canvas))


def _theta(config: DistortionConfig, params: dict[str, Tensor], digit_size: tuple[int, int]) -> Tensor:
    """Return the canvas -> digit parameters (N, P) of ``config.transform``, normalised frames, float32."""
    h, w = digit_size
    s_canvas = config.canvas_size
    lin = _linear(params["angle"], params["scale"])  # (N, 2, 2) digit -> canvas
    t = params["translation"].double()  # (N, 2)
    to_digit_norm = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)  # centred digit px -> normalised
    if config.transform == "affine":
        inv = torch.linalg.inv(lin)  # (N, 2, 2) canvas -> digit, centred px
        # digit_norm = D_src inv (S/2 canvas_norm - t), D_src = diag(2/w, 2/h)
        a = to_digit_norm[:, None] * inv * (s_canvas / 2)  # (N, 2, 2)
        b = -to_digit_norm * (inv @ t.unsqueeze(-1)).squeeze(-1)  # (N, 2)
        return torch.cat([a, b.unsqueeze(-1)], dim=2).reshape(-1, 6).float()  # (N, 6)
    if config.transform == "projective":
        unit = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)  # (4, 2)
        corners_px = unit * torch.tensor([w / 2, h / 2], dtype=torch.float64)  # (4, 2) digit edges, centred px
        placed = corners_px @ lin.transpose(1, 2) + t[:, None]  # (N, 4, 2) digit corners on the canvas, centred px
        units = unit.expand(placed.shape[0], -1, -1)  # (N, 4, 2) corners of any frame, in its normalised coordinates
        half = s_canvas / 2
        if config.corner_frame == "digit":
            dst_px = placed + params["corners"].double()  # (N, 4, 2)
        else:  # warp the whole canvas: its corner k goes to corner k + noise k; the digit's corners follow
            moved = homography_from_points(units, units + params["corners"].double() / half)  # (N, 8)
            dst_px = Projective().transform_points(moved, placed / half) * half  # (N, 4, 2)
        return homography_from_points(dst_px * (2.0 / s_canvas), units).float()  # (N, 8) canvas -> digit corners
    tps = _tps(config.tps_grid, config.tps_extent, s_canvas)
    control_px = tps.control_points * (s_canvas / 2)  # (K, 2) canvas px around the centre
    # source of control point k: inverse placement of (c_k + noise); TPS reproduces the affine part exactly
    moved = control_px + params["tps_offsets"].double() - t[:, None]  # (N, K, 2)
    src_px = moved @ torch.linalg.inv(lin).transpose(1, 2)  # (N, K, 2) centred digit px
    return (src_px * to_digit_norm).reshape(-1, 2 * tps.num_control_points).float()  # (N, 2K)


def _clutter(canvas: Tensor, params: dict[str, Tensor], pool: Tensor, size: int) -> Tensor:
    """Max-combine crops of ``pool`` (M, h, w) uint8 into ``canvas`` (N, 1, S, S); return the new canvas."""
    n, s = canvas.shape[0], canvas.shape[-1]
    ar = torch.arange(size)
    idx, crop, pos = params["clutter_index"], params["clutter_crop"], params["clutter_position"]
    rows = (crop[..., 1:2] + ar)[..., :, None]  # (N, C, k, 1)
    cols = (crop[..., 0:1] + ar)[..., None, :]  # (N, C, 1, k)
    patches = pool[idx[..., None, None], rows, cols]  # (N, C, k, k) uint8
    flat = (pos[..., 1:2] + ar)[..., :, None] * s + (pos[..., 0:1] + ar)[..., None, :]  # (N, C, k, k)
    layer = torch.zeros(n, s * s)
    layer.scatter_reduce_(1, flat.reshape(n, -1), patches.reshape(n, -1).float() / 255.0, "amax")  # (N, S*S)
    return torch.maximum(canvas, layer.view(n, 1, s, s))


def render(
    config: DistortionConfig,
    digits: Tensor,
    params: dict[str, Tensor],
    *,
    clutter_pool: Tensor | None = None,
    with_boxes: bool = False,
) -> DistortedBatch:
    """Render digits with given parameters: one warp for the batch, plus one scatter for clutter.

    Args:
        config: the distortion (the same one the parameters were drawn for; ``canvas_size`` may differ).
        digits: uint8 digits (N, H, W) (or float in [0, 1]).
        params: from :func:`sample_params`.
        clutter_pool: uint8 digits (M, H, W) clutter is cropped from (``config.clutter > 0``).
        with_boxes: also return the digit's ink box per canvas.

    Returns:
        A :class:`DistortedBatch`; ``images`` float32 (N, 1, S, S) in [0, 1].

    Example:
        >>> cfg = distortion_config("r")
        >>> digits = torch.zeros(2, 28, 28, dtype=torch.uint8)
        >>> digits[:, 10:18, 12:16] = 255
        >>> p = sample_params(cfg, digits, torch.arange(2), key=rng.derive_key(0))
        >>> render(cfg, digits, p).images.shape
        torch.Size([2, 1, 42, 42])
    """
    n, h, w = digits.shape
    x = digits.unsqueeze(1)  # (N, 1, H, W)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    theta = _theta(config, params, (h, w))
    transform = _tps(config.tps_grid, config.tps_extent, config.canvas_size) if config.transform == "tps" \
        else _MATRIX_TRANSFORMS[config.transform]
    s = config.canvas_size
    canvas = warp(x, theta, transform, (s, s), mode=config.mode).clamp_(0.0, 1.0)  # (N, 1, S, S)
    boxes = ink_boxes(canvas[:, 0]) if with_boxes else None
    if config.clutter > 0:
        if clutter_pool is None:
            raise ValueError("config.clutter > 0 needs clutter_pool, uint8 digits of shape (M, H, W)")
        canvas = _clutter(canvas, params, clutter_pool, config.clutter_size)
    return DistortedBatch(canvas, params, theta, boxes)


def distort(
    config: DistortionConfig | str,
    digits: Tensor,
    ids: Tensor,
    *,
    seed: int = 0,
    split: str = "train",
    epoch: int = 0,
    clutter_pool: Tensor | None = None,
    with_boxes: bool = False,
) -> DistortedBatch:
    """Distort a batch of digits; row i is a pure function of (seed, split, epoch, ``ids[i]``, ``digits[i]``).

    Args:
        config: a :class:`DistortionConfig` or preset name.
        digits: uint8 digits (N, H, W).
        ids: sample ids (N,) keying the RNG (use the MNIST index, so subsets keep their distortions).
        seed: RNG seed.
        split: split name mixed into the key (train/val/test never share draws).
        epoch: epoch mixed into the key (fresh training distortions per epoch).
        clutter_pool: uint8 digits (M, H, W) clutter is cropped from; default ``digits`` themselves.
        with_boxes: also return digit bounding boxes.

    Returns:
        A :class:`DistortedBatch` with images (N, 1, S, S), float32 in [0, 1].

    Example:
        >>> digits = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
        >>> distort("tc", digits, torch.arange(3)).images.shape
        torch.Size([3, 1, 60, 60])
    """
    config = distortion_config(config)
    pool = digits if clutter_pool is None else clutter_pool
    key = rng.derive_key(seed, split, epoch)
    params = sample_params(config, digits, ids, key=key, clutter_pool_size=pool.shape[0])
    return render(config, digits, params, clutter_pool=pool, with_boxes=with_boxes)
