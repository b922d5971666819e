"""A small MNIST-like dataset in MNIST's IDX gzip layout, generated for tests that must run without real MNIST.

Each image is one of a few hand-made stroke skeletons of its digit (unit box, x right, y down), bent by a smooth
random displacement field, slanted, rotated and stretched, scaled so that the digit with its stroke fills a 20x20
box, placed with its centre of mass at the centre of the 28x28 frame (as MNIST's digits are) and rendered
anti-aliased from the distance to its strokes: background 0, stroke cores 255. Everything is drawn from one seeded
generator, so the same arguments give the same bytes; nothing is cached on disk.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import torch

SIZE = 28
BOX = 20.0
N_TRAIN = 8000
N_TEST = 2000


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 14) -> list[tuple[float, float]]:
    angles = torch.linspace(math.radians(a0), math.radians(a1), n)
    return [(cx + rx * math.cos(a), cy - ry * math.sin(a)) for a in angles.tolist()]


def _templates() -> dict[int, list[list[list[tuple[float, float]]]]]:
    """Return digit -> variants -> polylines -> points."""
    return {
        0: [[_arc(0.5, 0.5, 0.32, 0.46, 90, 450, 24)],
            [_arc(0.5, 0.5, 0.26, 0.46, 100, 470, 24)]],
        1: [[[(0.5, 0.04), (0.5, 0.96)]],
            [[(0.3, 0.24), (0.56, 0.04), (0.5, 0.96)]],
            [[(0.34, 0.2), (0.55, 0.04), (0.52, 0.96)], [(0.32, 0.96), (0.72, 0.96)]]],
        2: [[_arc(0.5, 0.3, 0.33, 0.26, 160, -40) + [(0.12, 0.95), (0.9, 0.95)]],
            [_arc(0.48, 0.28, 0.3, 0.24, 170, -50) + [(0.16, 0.9)] + _arc(0.3, 0.86, 0.1, 0.09, 150, -90, 8)
             + [(0.92, 0.93)]]],
        3: [[_arc(0.5, 0.27, 0.3, 0.22, 150, -90, 12) + _arc(0.5, 0.72, 0.34, 0.25, 90, -150, 14)],
            [[(0.15, 0.05), (0.82, 0.05), (0.45, 0.42)] + _arc(0.5, 0.7, 0.34, 0.27, 110, -150, 14)]],
        4: [[[(0.64, 0.04), (0.08, 0.66), (0.92, 0.66)], [(0.66, 0.3), (0.66, 0.96)]],
            [[(0.2, 0.04), (0.12, 0.6), (0.9, 0.58)], [(0.7, 0.06), (0.7, 0.96)]]],
        5: [[[(0.84, 0.05), (0.3, 0.05), (0.24, 0.46)] + _arc(0.5, 0.68, 0.32, 0.27, 140, -150, 14)],
            [[(0.28, 0.05), (0.22, 0.44)] + _arc(0.5, 0.68, 0.31, 0.27, 140, -160, 14), [(0.28, 0.05), (0.85, 0.05)]]],
        6: [[[(0.72, 0.04), (0.46, 0.24), (0.29, 0.48), (0.24, 0.72)] + _arc(0.5, 0.72, 0.26, 0.23, 180, 540, 20)],
            [_arc(0.86, 0.62, 0.62, 0.58, 115, 190, 8) + _arc(0.52, 0.73, 0.28, 0.22, 170, 530, 20)]],
        7: [[[(0.1, 0.06), (0.9, 0.06), (0.42, 0.96)]],
            [[(0.1, 0.06), (0.9, 0.06), (0.46, 0.96)], [(0.42, 0.52), (0.82, 0.52)]],
            [[(0.08, 0.16), (0.12, 0.06), (0.9, 0.06), (0.6, 0.5), (0.5, 0.96)]]],
        8: [[_arc(0.5, 0.26, 0.24, 0.22, -90, 270, 20), _arc(0.5, 0.72, 0.3, 0.25, 90, 450, 20)],
            [_arc(0.5, 0.26, 0.22, 0.22, -60, 300, 20) + _arc(0.5, 0.72, 0.3, 0.25, 120, -240, 20)]],
        9: [[_arc(0.48, 0.3, 0.28, 0.25, 0, 360, 20), [(0.76, 0.3), (0.72, 0.62), (0.62, 0.96)]],
            [_arc(0.46, 0.28, 0.3, 0.24, -10, 360, 20) + [(0.74, 0.96)]]],
    }


def _segments() -> tuple[torch.Tensor, torch.Tensor]:
    """Return every template as segments, padded by repeating its last one, and each template's digit.

    Returns:
        ``(segments, digits)``: float64 (T, S, 2, 2) endpoints in the unit box, and int64 (T,) labels.
    """
    rows, digits = [], []
    for digit, variants in _templates().items():
        for polylines in variants:
            segs = [(p, q) for line in polylines for p, q in zip(line[:-1], line[1:], strict=False)]
            rows.append(torch.tensor(segs, dtype=torch.float64))
            digits.append(digit)
    longest = max(r.shape[0] for r in rows)
    padded = torch.stack([torch.cat([r, r[-1:].expand(longest - r.shape[0], 2, 2)]) for r in rows])
    return padded, torch.tensor(digits)


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _place(seg: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Distort unit-box segments (N, S, 2, 2) and place them in the 28x28 frame; return them and the half widths."""
    n = seg.shape[0]
    freq = _uniform(g, (n, 1, 1, 2, 2), -1.2, 1.2)
    phase = _uniform(g, (n, 1, 1, 2), 0, 2 * math.pi)
    amp = _uniform(g, (n, 1, 1, 2), 0.0, 0.05)
    pts = seg + amp * torch.sin(2 * math.pi * (freq @ seg.unsqueeze(-1)).squeeze(-1) + phase)
    x, y = pts[..., 0] - 0.5, pts[..., 1] - 0.5
    x = x * _uniform(g, (n, 1, 1), 0.75, 1.15) - _uniform(g, (n, 1, 1), -0.15, 0.45) * y
    angle = _uniform(g, (n, 1, 1), -0.15, 0.15)
    x, y = x * torch.cos(angle) - y * torch.sin(angle), x * torch.sin(angle) + y * torch.cos(angle)
    pts = torch.stack([x, y], dim=-1)
    half_width = _uniform(g, (n,), 0.75, 1.35)
    flat = pts.reshape(n, -1, 2)
    extent = (flat.amax(1) - flat.amin(1)).amax(1)
    scale = (BOX * _uniform(g, (n,), 0.9, 1.0) - 2 * half_width) / extent
    pts = pts * scale.view(n, 1, 1, 1)
    length = (pts[:, :, 1] - pts[:, :, 0]).norm(dim=-1) + 1e-9
    centre = ((pts[:, :, 0] + pts[:, :, 1]) / 2 * length.unsqueeze(-1)).sum(1) / length.sum(1, keepdim=True)
    target = SIZE / 2 + _uniform(g, (n, 2), -0.5, 0.5)
    return pts + (target - centre).view(n, 1, 1, 2), half_width


def _render(seg: torch.Tensor, half_width: torch.Tensor) -> torch.Tensor:
    """Draw segments (N, S, 2, 2) in pixel coordinates as anti-aliased strokes; return uint8 (N, 28, 28)."""
    centres = torch.arange(SIZE, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    p = torch.stack([xx, yy], dim=-1).reshape(1, 1, -1, 2)
    a, b = seg[:, :, 0].float().unsqueeze(2), seg[:, :, 1].float().unsqueeze(2)
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    dist = (p - a - t.unsqueeze(-1) * ab).norm(dim=-1).amin(1)
    ink = (half_width.float().view(-1, 1) + 0.5 - dist).clamp(0, 1)
    return (ink * 255).round().to(torch.uint8).view(-1, SIZE, SIZE)


def mnist_like(n: int, seed: int = 0, chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` MNIST-like digits with balanced labels.

    Args:
        n: number of images.
        seed: seed of the generator; the same ``(n, seed)`` gives the same images.
        chunk: images rendered at once (memory only; the result does not depend on it).

    Returns:
        ``(images, labels)``: uint8 (n, 28, 28) with background 0 and strokes up to 255, and uint8 (n,) in 0-9.

    Example:
        >>> images, labels = mnist_like(20)
        >>> tuple(images.shape), int(images.max()), sorted(set(labels.tolist())) == list(range(10))
        ((20, 28, 28), 255, True)
    """
    g = torch.Generator().manual_seed(seed)
    templates, template_digit = _segments()
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    choice = torch.empty(n, dtype=torch.int64)
    for digit in range(10):
        mine = torch.nonzero(labels == digit).flatten()
        options = torch.nonzero(template_digit == digit).flatten()
        choice[mine] = options[torch.randint(len(options), (len(mine),), generator=g)]
    seg, half_width = _place(templates[choice], g)
    images = torch.cat([_render(seg[i:i + chunk], half_width[i:i + chunk]) for i in range(0, n, chunk)])
    return images, labels.to(torch.uint8)


def _idx(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 8, tensor.ndim]) + b"".join(struct.pack(">I", d) for d in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def write_mnist_like(folder: str | Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> Path:
    """Write MNIST's four IDX files (gzip, MNIST's names) of generated digits into ``folder``; return it.

    Args:
        folder: created if missing.
        n_train: images in ``train-*``.
        n_test: images in ``t10k-*``.
        seed: the training set uses ``seed``, the test set ``seed + 1``.

    Returns:
        The folder, ready for :func:`stnkit.data.idx.load_mnist` (which warns that the files are not MNIST's).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = mnist_like(n, seed=s)
        for part, tensor in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            (folder / f"{prefix}-{part}.gz").write_bytes(gzip.compress(_idx(tensor), compresslevel=6, mtime=0))
    return folder
