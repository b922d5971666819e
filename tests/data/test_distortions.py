import dataclasses
import math

import pytest
import torch

from stnkit.data import rng
from stnkit.data.distortions import (
    KINDS,
    PRESETS,
    DistortionConfig,
    distort,
    distortion_config,
    ink_boxes,
    render,
    sample_params,
)
from stnkit.transforms import Projective

KEY = rng.derive_key(0, "train", 0)


def _params(kind, digits, **overrides):
    cfg = distortion_config(kind, **overrides)
    ids = torch.arange(len(digits))
    return cfg, sample_params(cfg, digits, ids, key=KEY, clutter_pool_size=len(digits))


def _assert_uniform(x, lo, hi, bins=10):
    """Range, mean, variance and a coarse histogram of a uniform sample."""
    x = x.double()
    n = x.numel()
    assert lo <= float(x.min())
    assert float(x.max()) <= hi
    assert float(x.min()) < lo + 0.01 * (hi - lo)
    assert float(x.max()) > hi - 0.01 * (hi - lo)
    width = hi - lo
    assert float(x.mean()) == pytest.approx((lo + hi) / 2, abs=4 * width / math.sqrt(12 * n))
    assert float(x.var()) == pytest.approx(width**2 / 12, rel=0.1)
    counts = torch.histc(x, bins=bins, min=lo, max=hi)
    assert float((counts - n / bins).abs().max()) < 5 * math.sqrt(n / bins)


def _assert_gaussian(x, std):
    x = x.double().reshape(-1)
    n = x.numel()
    assert float(x.mean()) == pytest.approx(0.0, abs=4 * std / math.sqrt(n))
    assert float(x.std()) == pytest.approx(std, rel=0.05)
    assert float((x.abs() < std).double().mean()) == pytest.approx(0.6827, abs=0.03)


class TestDistortionConfig:
    def test_presets_follow_the_paper(self):
        assert KINDS == ("plain", "r", "rts", "p", "e", "tc")
        r, rts, p, e, tc = (distortion_config(k) for k in ("r", "rts", "p", "e", "tc"))
        assert (r.rotation, r.scale, r.translate, r.canvas_size) == ((-90, 90), (1, 1), False, 42)
        assert (rts.rotation, rts.scale, rts.translate, rts.canvas_size) == ((-45, 45), (0.7, 1.2), True, 42)
        assert (p.transform, p.scale, p.corner_std, p.corner_frame) == ("projective", (0.75, 1.0), 5.0, "canvas")
        assert (e.transform, e.scale, e.tps_std, e.tps_grid**2) == ("tps", (0.75, 1.0), 1.5, 16)
        assert (tc.canvas_size, tc.clutter, tc.clutter_size, tc.translate) == (60, 6, 6, True)
        assert distortion_config("plain").canvas_size == 28

    def test_overrides(self):
        cfg = distortion_config("RTS", scale=[0.5, 1.0])
        assert cfg.kind == "rts"
        assert cfg.scale == (0.5, 1.0)  # lists (YAML/CLI) become tuples: configs stay hashable
        assert hash(cfg) == hash(distortion_config("rts", scale=(0.5, 1.0)))
        assert distortion_config(cfg) is cfg
        assert distortion_config(cfg, canvas_size=50).canvas_size == 50
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.canvas_size = 3

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown distortion 'x'"):
            distortion_config("x")
        with pytest.raises(ValueError, match="rotation must be"):
            DistortionConfig(rotation=(10, -10))
        with pytest.raises(ValueError, match="scale must be positive"):
            DistortionConfig(scale=(0, 1))
        with pytest.raises(ValueError, match="transform must be"):
            DistortionConfig(transform="elastic")
        with pytest.raises(ValueError, match="mode"):
            DistortionConfig(mode="bicubic")
        with pytest.raises(ValueError, match="corner_frame must be 'canvas' or 'digit'; got 'image'"):
            DistortionConfig(corner_frame="image")
        with pytest.raises(TypeError):
            distortion_config("rts", sigma=3)


class TestSampleParams:
    def test_r(self, digits):
        _, p = _params("r", digits)
        _assert_uniform(p["angle"], -90, 90)
        assert torch.equal(p["scale"], torch.ones(len(digits)))
        assert torch.equal(p["translation"], torch.zeros(len(digits), 2))

    def test_rts(self, digits):
        _, p = _params("rts", digits)
        _assert_uniform(p["angle"], -45, 45)
        _assert_uniform(p["scale"], 0.7, 1.2)
        t = p["translation"]
        assert float(t.abs().max()) <= 21
        assert (t.std(0) > 2.5).all()  # random placement, not centred
        assert abs(float(torch.corrcoef(torch.stack([p["angle"], p["scale"]]))[0, 1])) < 0.1

    def test_p(self, digits):
        _, p = _params("p", digits)
        _assert_uniform(p["scale"], 0.75, 1.0)
        assert p["corners"].shape == (len(digits), 4, 2)
        _assert_gaussian(p["corners"], 5.0)
        assert torch.equal(p["angle"], torch.zeros(len(digits)))

    def test_e(self, digits):
        _, p = _params("e", digits)
        _assert_uniform(p["scale"], 0.75, 1.0)
        assert p["tps_offsets"].shape == (len(digits), 16, 2)
        _assert_gaussian(p["tps_offsets"], 1.5)

    def test_tc(self, digits):
        _, p = _params("tc", digits)
        t = p["translation"]
        assert torch.equal(t, t.round())  # whole pixels: 28 -> 60 keeps pixel centres aligned
        assert (t.std(0) > 5).all()
        idx, crop, pos = p["clutter_index"], p["clutter_crop"], p["clutter_position"]
        assert idx.shape == (len(digits), 6)
        assert crop.shape == pos.shape == (len(digits), 6, 2)
        assert int(idx.min()) >= 0
        assert int(idx.max()) < len(digits)
        assert int(crop.min()) == 0
        assert int(crop.max()) == 28 - 6
        assert int(pos.min()) == 0
        assert int(pos.max()) == 60 - 6
        _assert_uniform(pos.double(), 0, 54, bins=5)

    def test_clutter_needs_pool(self, digits):
        with pytest.raises(ValueError, match="clutter pool"):
            sample_params(distortion_config("tc"), digits[:2], torch.arange(2), key=KEY)

    def test_precomputed_boxes(self, digits):
        cfg = distortion_config("rts")
        a = sample_params(cfg, digits[:50], torch.arange(50), key=KEY)
        b = sample_params(cfg, digits[:50], torch.arange(50), key=KEY, digit_boxes=ink_boxes(digits[:50]))
        assert all(torch.equal(a[k], b[k]) for k in a)


class TestRender:
    @pytest.mark.parametrize("kind", KINDS)
    def test_shapes_and_range(self, kind, digits):
        cfg, p = _params(kind, digits[:64])
        out = render(cfg, digits[:64], p, clutter_pool=digits, with_boxes=True)
        s = cfg.canvas_size
        assert out.images.shape == (64, 1, s, s)
        assert out.images.dtype == torch.float32
        assert float(out.images.min()) >= 0
        assert float(out.images.max()) <= 1
        assert float(out.images.amax(dim=(1, 2, 3)).min()) > 0.5  # every canvas shows its digit
        assert out.boxes.shape == (64, 4)
        assert (out.boxes[:, :2] >= 0).all()
        assert (out.boxes[:, 2:] <= s).all()
        assert (out.boxes[:, 2:] > out.boxes[:, :2]).all()

    def test_plain_is_identity(self, digits):
        cfg, p = _params("plain", digits[:16])
        out = render(cfg, digits[:16], p).images
        assert torch.allclose(out[:, 0], digits[:16].float() / 255, atol=1e-5)

    def test_unrotated_digit_is_centred(self, digits):
        cfg, p = _params("r", digits[:8], rotation=(0, 0))
        out = render(cfg, digits[:8], p).images
        assert torch.allclose(out[:, 0, 7:35, 7:35], digits[:8].float() / 255, atol=1e-5)
        assert float(out[:, 0, :7].abs().max()) == 0

    def test_rotation_direction(self):
        digit = torch.zeros(1, 28, 28, dtype=torch.uint8)
        digit[0, 13:15, 20:24] = 255  # a blob right of the centre
        cfg = distortion_config("r")
        p = {"angle": torch.tensor([90.0]), "scale": torch.ones(1), "translation": torch.zeros(1, 2)}
        box = render(cfg, digit, p, with_boxes=True).boxes[0].tolist()
        # +90 deg turns x towards y: the blob ends up below the centre (y down), horizontally centred
        assert box[0] >= 19
        assert box[2] <= 23
        assert box[1] >= 26

    def test_translation_and_scale(self, digits):
        cfg = distortion_config("rts")
        d = digits[:32]
        base = {"angle": torch.zeros(32), "scale": torch.ones(32), "translation": torch.zeros(32, 2)}
        shift = dict(base, translation=torch.tensor([3.0, -2.0]).expand(32, 2))
        half = dict(base, scale=torch.full((32,), 0.5))

        def centre_of_mass(img):
            ys, xs = torch.meshgrid(torch.arange(42.0), torch.arange(42.0), indexing="ij")
            m = img[:, 0].sum(dim=(1, 2))
            return torch.stack([(img[:, 0] * xs).sum((1, 2)) / m, (img[:, 0] * ys).sum((1, 2)) / m], -1)

        a, b, c = (render(cfg, d, q).images for q in (base, shift, half))
        assert torch.allclose(centre_of_mass(b) - centre_of_mass(a), torch.tensor([3.0, -2.0]), atol=1e-3)
        ratio = c.sum(dim=(1, 2, 3)) / a.sum(dim=(1, 2, 3))
        assert torch.allclose(ratio, torch.full_like(ratio, 0.25), rtol=0.06)

    @pytest.mark.parametrize(("kind", "bigger"), [("rts", 84), ("tc", 120)])
    def test_digit_stays_in_canvas(self, kind, bigger, digits):
        cfg, p = _params(kind, digits, clutter=0)
        inside = render(cfg, digits, p).images.sum(dim=(1, 2, 3))
        # same parameters, larger canvas around the same centre: nothing may have been cut off
        everything = render(dataclasses.replace(cfg, canvas_size=bigger), digits, p).images.sum(dim=(1, 2, 3))
        assert torch.allclose(inside, everything, rtol=1e-4)

    def test_projective_maps_corners(self, digits):
        cfg, p = _params("p", digits[:20], corner_frame="digit")
        out = render(cfg, digits[:20], p)
        unit = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        dst_px = unit * 14 * p["scale"][:, None, None] + p["corners"]  # digit edges scaled, plus noise
        src = Projective().transform_points(out.theta, dst_px / 21)
        assert torch.allclose(src, unit.expand(20, 4, 2), atol=1e-4)

    def test_projective_canvas_frame_moves_the_canvas_corners(self, digits):
        cfg, p = _params("p", digits[:20])
        assert cfg.corner_frame == "canvas"  # the preset
        out = render(cfg, digits[:20], p)
        unit = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        # canvas corner k, moved by noise k, samples where the unwarped canvas corner k sits in the digit's frame:
        # 21 px from the centre over the scaled half-digit 14 s, i.e. unit * 1.5 / s (P has no rotation or shift)
        src = Projective().transform_points(out.theta, (unit * 21 + p["corners"]) / 21)
        assert torch.allclose(src, unit * 1.5 / p["scale"][:, None, None], atol=1e-4)
        # and the digit itself moves less than with the same noise on its own corners
        digit_frame = render(dataclasses.replace(cfg, corner_frame="digit"), digits[:20], p)
        plain = render(dataclasses.replace(cfg, corner_std=0.0), digits[:20], p)
        assert (out.images - plain.images).abs().sum() < 0.8 * (digit_frame.images - plain.images).abs().sum()

    @pytest.mark.parametrize("kind", ["p", "e"])
    def test_zero_noise_is_plain_scaling(self, kind, digits):
        noiseless = {"p": {"corner_std": 0.0}, "e": {"tps_std": 0.0}}[kind]
        cfg, p = _params(kind, digits[:16], **noiseless)
        scaled = render(distortion_config("r"), digits[:16], {k: p[k] for k in ("angle", "scale", "translation")})
        assert torch.allclose(render(cfg, digits[:16], p).images, scaled.images, atol=1e-4)

    def test_elastic_noise_changes_the_digit(self, digits):
        cfg, p = _params("e", digits[:16])
        smooth = render(cfg, digits[:16], dict(p, tps_offsets=torch.zeros_like(p["tps_offsets"]))).images
        change = (render(cfg, digits[:16], p).images - smooth).abs().amax(dim=(1, 2, 3))  # (16,)
        assert float(change.min()) > 0.1

    def test_clutter(self, digits):
        cfg, p = _params("tc", digits[:40])
        out = render(cfg, digits[:40], p, clutter_pool=digits, with_boxes=True)
        clean = render(dataclasses.replace(cfg, clutter=0), digits[:40], p)
        assert (out.images >= clean.images).all()  # combined by max
        assert torch.equal(out.boxes, ink_boxes(clean.images[:, 0]))  # boxes exclude clutter
        # the digit is an exact whole-pixel copy: its box is the source ink box shifted
        src = ink_boxes(digits[:40])
        assert torch.equal(out.boxes[:, 2:] - out.boxes[:, :2], src[:, 2:] - src[:, :2])
        i, c = 3, 2  # one patch, checked by hand
        (x, y), (cx, cy) = p["clutter_position"][i, c].tolist(), p["clutter_crop"][i, c].tolist()
        patch = digits[int(p["clutter_index"][i, c]), cy:cy + 6, cx:cx + 6].float() / 255
        assert (out.images[i, 0, y:y + 6, x:x + 6] >= patch).all()
        extra = (out.images - clean.images).flatten(1).gt(0).sum(1)
        assert float(extra.gt(0).double().mean()) > 0.9  # nearly every canvas has visible clutter

    def test_clutter_needs_pool(self, digits):
        cfg, p = _params("tc", digits[:2])
        with pytest.raises(ValueError, match="clutter_pool"):
            render(cfg, digits[:2], p)


class TestDistort:
    @pytest.mark.parametrize("kind", KINDS)
    def test_single_index_equals_batch_row(self, kind, digits):
        ids = torch.tensor([11, 3, 500, 42, 7])
        batch = distort(kind, digits[ids], ids, seed=5, clutter_pool=digits)
        for row in (0, 2, 4):
            one = distort(kind, digits[ids[row:row + 1]], ids[row:row + 1], seed=5, clutter_pool=digits)
            assert all(torch.equal(one.params[k][0], batch.params[k][row]) for k in batch.params)
            assert torch.allclose(one.images[0], batch.images[row], atol=1e-6)

    def test_keys(self, digits):
        d, ids = digits[:8], torch.arange(8)
        ref = distort("rts", d, ids).images
        assert torch.equal(ref, distort("rts", d, ids).images)
        for kwargs in ({"seed": 1}, {"split": "test"}, {"epoch": 1}):
            assert not torch.allclose(ref, distort("rts", d, ids, **kwargs).images)
        assert not torch.allclose(ref, distort("rts", d, ids + 1).images)  # ids key the draws, not positions

    def test_presets_table_is_used(self):
        assert set(PRESETS) == set(KINDS)
        d = torch.zeros(2, 28, 28, dtype=torch.uint8)
        assert distort("tc", d, torch.arange(2)).images.shape == (2, 1, 60, 60)  # pool defaults to the digits
