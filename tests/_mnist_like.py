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
N_TRAIN = 6000
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


def _points(step: float = 0.035) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return every template as points along its strokes, at most ``step`` apart, with weights and its digit.

    Returns:
        ``(points, weights, digits)``: float32 (T, M, 2) in the unit box, float32 (T, M) stroke length per point
        (0 for the padding, copies of a template's last point), and int64 (T,) labels.
    """
    rows, digits = [], []
    for digit, variants in _templates().items():
        for polylines in variants:
            pieces = []
            for line in polylines:
                for p, q in zip(line[:-1], line[1:], strict=False):
                    k = max(1, math.ceil(math.dist(p, q) / step))
                    t = torch.arange(k + 1, dtype=torch.float32).unsqueeze(1) / k
                    pts = (1 - t) * torch.tensor(p) + t * torch.tensor(q)
                    pieces.append(torch.cat([pts, torch.full((k + 1, 1), math.dist(p, q) / (k + 1))], dim=1))
            rows.append(torch.cat(pieces))
            digits.append(digit)
    longest = max(r.shape[0] for r in rows)
    pad = [torch.cat([r, (r[-1:] * torch.tensor([1.0, 1.0, 0.0])).expand(longest - r.shape[0], 3)]) for r in rows]
    padded = torch.stack(pad)
    return padded[..., :2], padded[..., 2], torch.tensor(digits)


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _place(pts: torch.Tensor, weights: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Distort unit-box points (N, M, 2) and place them in the 28x28 frame; return them and the half widths."""
    n = pts.shape[0]
    x, y = pts[..., 0], pts[..., 1]
    f = _uniform(g, (n, 1, 4), -1.2, 1.2)
    phase = _uniform(g, (n, 1, 2), 0, 2 * math.pi)
    amp = _uniform(g, (n, 1, 2), 0.0, 0.05)
    x, y = (x + amp[..., 0] * torch.sin(2 * math.pi * (f[..., 0] * x + f[..., 1] * y) + phase[..., 0]),
            y + amp[..., 1] * torch.sin(2 * math.pi * (f[..., 2] * x + f[..., 3] * y) + phase[..., 1]))
    x, y = x - 0.5, y - 0.5
    x = x * _uniform(g, (n, 1), 0.75, 1.15) - _uniform(g, (n, 1), -0.15, 0.45) * y
    angle = _uniform(g, (n, 1), -0.15, 0.15)
    x, y = x * torch.cos(angle) - y * torch.sin(angle), x * torch.sin(angle) + y * torch.cos(angle)
    half_width = _uniform(g, (n,), 0.75, 1.35)
    extent = torch.maximum(x.amax(1) - x.amin(1), y.amax(1) - y.amin(1))
    scale = ((BOX * _uniform(g, (n,), 0.9, 1.0) - 2 * half_width) / extent).unsqueeze(1)
    pts = torch.stack([x * scale, y * scale], dim=-1)
    centre = (pts * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)
    target = SIZE / 2 + _uniform(g, (n, 2), -0.5, 0.5)
    return pts + (target - centre).unsqueeze(1), half_width


def _render(pts: torch.Tensor, half_width: torch.Tensor, reach: int = 2) -> torch.Tensor:
    """Draw points (N, M, 2) along strokes, in pixel coordinates, as anti-aliased strokes; return uint8 (N, 28, 28).

    A pixel's ink falls linearly from 1 to 0 as its centre's distance to the nearest point goes from
    ``half_width - 0.5`` to ``half_width + 0.5``; each point is measured on the ``2 * reach + 1`` square of pixels
    around it, enough for half widths up to ``reach - 0.5`` px.
    """
    n, side = pts.shape[0], SIZE + 2 * reach + 1
    pts = pts + reach
    offsets = torch.arange(-reach, reach + 1)
    ox, oy = offsets.repeat(2 * reach + 1), offsets.repeat_interleave(2 * reach + 1)
    x, y = pts[..., 0, None], pts[..., 1, None]
    px, py = x.floor().long() + ox, y.floor().long() + oy
    ink = (half_width.view(n, 1, 1) + 0.5 - torch.hypot(px + 0.5 - x, py + 0.5 - y)).clamp_(0, 1)
    flat = (torch.arange(n).view(n, 1, 1) * side + py) * side + px
    out = torch.zeros(n * side * side).scatter_reduce_(0, flat.flatten(), ink.flatten(), reduce="amax")
    out = out.view(n, side, side)[:, reach:reach + SIZE, reach:reach + SIZE]
    return (out * 255).round().to(torch.uint8)


def mnist_like(n: int, seed: int = 0, chunk: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
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
    templates, weights, template_digit = _points()
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    choice = torch.empty(n, dtype=torch.int64)
    for digit in range(10):
        mine = torch.nonzero(labels == digit).flatten()
        options = torch.nonzero(template_digit == digit).flatten()
        choice[mine] = options[torch.randint(len(options), (len(mine),), generator=g)]
    pts, half_width = _place(templates[choice], weights[choice], g)
    images = torch.cat([_render(pts[i:i + chunk], half_width[i:i + chunk]) for i in range(0, n, chunk)])
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
