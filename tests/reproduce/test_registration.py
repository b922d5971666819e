"""Registration reproduction: metrics on hand-made masks, same-class pairing, conventions, smoke run, resume, peer."""

import json

import pytest
import torch

from stnkit import fields
from stnkit.reproduce import registration, regtrain, run

EXP = registration.EXPERIMENT
SYNTHETIC = {"digits": "synthetic"}
OURS = ["affine", "dense", "diffeomorphic", "affine-dense", "affine-3d", "dense-3d", "affine-dense-3d"]


class TestDice:
    def test_hand_computed(self):
        a = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
        b = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
        # |a & b| = 1, |a| + |b| = 4 -> 0.5; disjoint -> 0; both empty -> 1
        assert regtrain.dice(a, b).tolist() == [0.5, 0.0, 1.0]

    def test_identical_masks(self):
        m = torch.rand(3, 1, 5, 5) > 0.5
        assert torch.equal(regtrain.dice(m, m), torch.ones(3))

    def test_mask_threshold_is_relative_to_each_image(self):
        images = torch.tensor([[[[0.1, 0.3, 0.6]]], [[[1.0, 2.0, 4.0]]]])
        # half of each image's maximum: 0.3 and 2.0 (strictly above)
        assert regtrain.digit_mask(images).flatten(1).tolist() == [[False, False, True], [False, False, True]]


class TestPairs:
    def test_same_class_two_images(self):
        _, labels = regtrain.synthetic_digits(60)
        pairs = regtrain.make_pairs(labels, 200, seed=3, split="train")
        assert pairs.shape == (200, 2)
        assert torch.equal(labels[pairs[:, 0]], labels[pairs[:, 1]])
        assert (pairs[:, 0] != pairs[:, 1]).all()
        assert len(labels[pairs[:, 0]].unique()) == 10

    def test_deterministic_per_seed_and_split(self):
        _, labels = regtrain.synthetic_digits(60)
        a = regtrain.make_pairs(labels, 50, seed=1, split="train")
        assert torch.equal(a, regtrain.make_pairs(labels, 50, seed=1, split="train"))
        assert not torch.equal(a, regtrain.make_pairs(labels, 50, seed=1, split="test"))
        assert not torch.equal(a, regtrain.make_pairs(labels, 50, seed=2, split="train"))

    def test_single_image_class(self):
        with pytest.raises(ValueError, match="class 1 has one image"):
            regtrain.make_pairs(torch.tensor([0, 0, 1]), 20, seed=0, split="train")


class TestNormalizedMSE:
    def test_against_float64_cosine(self):
        torch.manual_seed(0)
        a, b = torch.rand(3, 1, 5, 6, dtype=torch.float64), torch.rand(3, 1, 5, 6, dtype=torch.float64)
        cos = [float((x * y).sum() / (x.square().sum() * y.square().sum()).sqrt()) for x, y in zip(a, b)]
        expected = sum(2 - 2 * c for c in cos) / 3
        assert float(fields.normalized_mse(a, b, eps=0.0)) == pytest.approx(expected, rel=1e-12)

    def test_scale_invariant_and_zero_on_match(self):
        a = torch.rand(2, 1, 4, 4, 4, dtype=torch.float64)
        assert float(fields.normalized_mse(0.1 * a, 7 * a, eps=0.0)) < 1e-12

    def test_emptying_the_volume_does_not_lower_it(self):
        # the 3-D collapse: with no overlap, fading (or shrinking) the warped slab lowers MSE but not nmse
        fixed, moving = torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8)
        fixed[..., 1:3, :, :], moving[..., 5:7, :, :] = 1.0, 1.0
        assert float(fields.mse(0.2 * moving, fixed)) < float(fields.mse(moving, fixed))
        assert float(fields.normalized_mse(0.2 * moving, fixed)) == pytest.approx(2.0, rel=1e-6)
        assert float(fields.normalized_mse(moving, fixed)) == pytest.approx(2.0, rel=1e-6)

    def test_gradcheck(self):
        a = torch.rand(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
        b = torch.rand(2, 1, 3, 4, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda x: fields.normalized_mse(x, b), (a,))
        assert torch.autograd.gradgradcheck(lambda x: fields.normalized_mse(x, b), (a,))

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same shape"):
            fields.normalized_mse(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))


def test_similarity_loss_dispatch():
    a, b = torch.rand(2, 1, 9, 9), torch.rand(2, 1, 9, 9)
    assert torch.equal(regtrain.similarity_loss("mse", a, b), fields.mse(a, b))
    assert torch.equal(regtrain.similarity_loss("lncc", a, b, 5), fields.lncc(a, b, 5))
    assert torch.equal(regtrain.similarity_loss("nmse", a, b), fields.normalized_mse(a, b))
    with pytest.raises(ValueError, match="unknown similarity 'ssim'; expected one of mse, nmse, lncc"):
        regtrain.similarity_loss("ssim", a, b)


class TestPoses3D:
    FIELDS = {**SYNTHETIC, "dims": 3, "train_images": 20, "train_pairs": 10, "volume_size": 16, "thickness": 4,
              "rotation": (30.0, 30.0, 30.0)}

    def test_fixed_at_the_canonical_pose(self):
        from stnkit.data.mnist3d import render_volumes

        split = regtrain.load_split(self.FIELDS, "train", 0, None)
        digits, _ = regtrain.synthetic_digits(20, seed=0)
        small = torch.nn.functional.avg_pool2d(digits.float()[:, None], 2)[:, 0] / 255.0
        zero = {"angles": torch.zeros(20, 3), "translation": torch.zeros(20, 3)}
        assert torch.equal(split.fixed_images, render_volumes(small, zero, 16, 4))
        assert not torch.allclose(split.images, split.fixed_images)  # the movings are posed
        moving, fixed = split.batch([0, 1])
        assert torch.equal(moving, split.images[split.pairs[:2, 0]])
        assert torch.equal(fixed, split.fixed_images[split.pairs[:2, 1]])

    def test_random_fixed_pose_uses_the_posed_volumes(self):
        split = regtrain.load_split({**self.FIELDS, "fixed_pose": "random"}, "train", 0, None)
        assert split.fixed_images is split.images

    def test_unknown_fixed_pose(self):
        with pytest.raises(ValueError, match="unknown fixed_pose 'upright'; expected one of canonical, random"):
            regtrain.load_split({**self.FIELDS, "fixed_pose": "upright"}, "train", 0, None)


@pytest.mark.parametrize("name", ["affine", "affine-dense"])
def test_bounded_affine_head(name):
    torch.manual_seed(0)
    model = regtrain.build_model(name, 3, (4, 8, 8), bound=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(5.0 * torch.randn_like(p))
        head = model.transformer if name == "affine" else model.parametric
        params = head.predict_params(torch.rand(2, 2, 8, 8, 8))  # (2, 12)
    identity = head.transform.identity()
    assert (params - identity).abs().max() <= 0.5
    assert (params - identity).abs().max() > 0.4  # saturated, not merely small


@pytest.mark.parametrize("name", ["affine", "dense", "diffeomorphic", "affine-dense"])
@pytest.mark.parametrize("dims", [2, 3])
def test_total_displacement_reproduces_the_warp(name, dims):
    torch.manual_seed(0)
    model = regtrain.build_model(name, dims, (4, 8, 8))
    moving, fixed = torch.rand(2, 1, *[8] * dims), torch.rand(2, 1, *[8] * dims)
    with torch.no_grad():
        warped, d, dense = regtrain.forward(model, name, moving, fixed)
        assert torch.allclose(warped, moving, atol=1e-5)  # identity at initialisation
        assert d.abs().max() < 1e-5
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        warped, d, dense = regtrain.forward(model, name, moving, fixed)
    assert d.abs().max() > 1e-2
    assert (dense is None) == (name == "affine")
    # the returned displacement (voxels, x-y order) is the one the model warped with
    assert torch.allclose(fields.warp(moving, d, units="voxel"), warped, atol=1e-5)


def test_jacobian_colours():
    from stnkit.viz import jacobian_image

    img = jacobian_image(torch.tensor([[2.0, 0.5, 1.0, 0.0]]))  # (3, 1, 4)
    assert img[:, 0].T.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("dims", [2, 3])
def test_pair_row_panels(dims):
    n = 8
    pair = {k: torch.rand(1, 1, *[n] * dims) for k in ("moving", "fixed", "warped")}
    pair["displacement"] = torch.zeros(1, dims, *[n] * dims)
    row = registration.pair_row(pair, "dense")
    assert [p.title for p in row] == ["moving", "fixed", "warped", "deformed grid", "Jacobian det."]
    assert all(p.image.shape[-2:] == (n, n) for p in row)
    lines = row[3].outlines
    assert len(lines) == n  # every 2nd row and column
    assert torch.allclose(lines[0][0][:, 0], torch.arange(n, dtype=torch.float32))  # zero field: pixel centres
    assert torch.equal(row[4].image, torch.ones(3, n, n))  # det 1 everywhere: white


def test_smoke_run_and_resume(tmp_path, one_thread):
    out = tmp_path / "registration"
    table = run(EXP, out, budget="smoke", cells=OURS, progress=False, overrides=SYNTHETIC, log=lambda *_: None)
    cells = {c["key"]: c for c in table["cells"]}
    assert list(cells) == OURS
    for c in cells.values():
        assert 0.0 <= c["dice_before"] <= 1.0
        assert 0.0 <= c["dice_after"] <= 1.0
        assert 0.0 <= c["folding"] <= 100.0
        assert c["ms_per_pair"] > 0
        assert c["steps"] == 3
    for dims_keys in (OURS[:4], OURS[4:]):  # the same held-out pairs for every model of one dimensionality
        assert len({cells[k]["dice_before"] for k in dims_keys}) == 1
        assert len({cells[k]["mse_before"] for k in dims_keys}) == 1
    saved = json.loads((out / "registration.json").read_text())
    assert saved["budget"] == "smoke"
    assert saved["setting"]["lam"] == 0.05
    md = (out / "registration.md").read_text()
    assert "Budget **smoke**" in md
    assert "| affine + dense (cascade, one sampling) | 2-D |" in md
    assert "Cells finished: 7 of 8" in md
    assert (out / "fig_registration.png").stat().st_size > 5_000
    assert (out / "fig_registration_3d.png").stat().st_size > 5_000

    lines = []
    run(EXP, out, budget="smoke", cells=OURS, progress=False, figures=False, overrides=SYNTHETIC, log=lines.append)
    assert sum(line.endswith("skipped") for line in lines) == len(OURS)
    assert not any("running" in line for line in lines)


def test_interrupted_seed_resumes_to_the_same_result(tmp_path, one_thread):
    f = {**EXP.budget("smoke").fields_for(EXP.cells[1]), **SYNTHETIC, "checkpoint_every": 1}
    fresh = regtrain.register_seed({**f, "steps": 4}, 0, tmp_path / "fresh")
    regtrain.register_seed({**f, "steps": 2}, 0, tmp_path / "resumed")  # stopped after 2 steps...
    (tmp_path / "resumed" / "result.json").unlink()  # ...before its result was written
    resumed = regtrain.register_seed({**f, "steps": 4}, 0, tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 4
    assert len(state["losses"]) == 4
    for k in ("final_loss", "mse_after", "dice_after"):
        assert resumed[k] == pytest.approx(fresh[k], rel=1e-5)


def test_peer_row_skipped_when_not_importable(tmp_path):
    lines = []
    table = run(EXP, tmp_path / "r", budget="smoke", cells=["voxelmorph"], progress=False, figures=False,
                overrides={**SYNTHETIC, "peer_module": "stnkit_no_such_peer"}, log=lines.append)
    (cell,) = table["cells"]
    assert cell["skipped"].startswith("stnkit_no_such_peer is not importable (ModuleNotFoundError")
    assert "\n" not in cell["skipped"]
    assert any(line.endswith(f"voxelmorph: skipped: {cell['skipped']}, 0 s") for line in lines)
    assert "skipped: stnkit_no_such_peer is not importable" in (tmp_path / "r" / "registration.md").read_text()


def test_peer_row_trains_voxelmorph(tmp_path, one_thread):
    if regtrain.load_peer()[0] is None:
        pytest.skip("voxelmorph is not importable (dev-only dependency)")
    table = run(EXP, tmp_path / "r", budget="smoke", cells=["voxelmorph"], progress=False, figures=False,
                overrides=SYNTHETIC, log=lambda *_: None)
    (cell,) = table["cells"]
    assert "skipped" not in cell
    assert 0.0 <= cell["dice_after"] <= 1.0
    assert cell["params"] > 0
