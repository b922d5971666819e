"""Co-localisation training: the Lightning module, the triplet loss through the frozen encoder, box history."""

import torch

from stnkit.data.coloc import make_coloc_set
from stnkit.models import CNN
from stnkit.models.coloc import CNNEmbedding
from stnkit.training.coloc import ColocLitModule, fit_coloc


def _set(n=8):
    g = torch.Generator().manual_seed(0)
    digits = torch.zeros(20, 28, 28, dtype=torch.uint8)
    digits[:, 6:22, 10:18] = torch.randint(100, 256, (20, 16, 8), generator=g, dtype=torch.uint8)
    return make_coloc_set(digits, torch.zeros(20, dtype=torch.long), 0, n=n, seed=1)


def test_fit_coloc_trains_only_the_transformer(tmp_path):
    s = _set()
    cnn = CNN(28, channels=(4, 8))
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    res = fit_coloc(s, cnn, steps=3, eval_every=1, out=tmp_path / "run")
    assert [h["step"] for h in res["history"]] == [0, 1, 2, 3]
    assert len(res["ious"]) == 8
    assert len(res["boxes"]) == 8
    assert res["correct"] == sum(i > 0.5 for i in res["ious"]) / 8 * 100
    start, end = torch.tensor(res["history"][0]["params"]), torch.tensor(res["history"][-1]["params"])
    assert torch.allclose(start, torch.tensor([[0.5, 0.0, 0.0]]).expand(8, 3))  # centred half-size window
    assert not torch.allclose(start, end)  # the transformer moved
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())  # the encoder did not
    assert res["true_boxes"] == s.boxes.tolist()
    assert (tmp_path / "run" / "logs" / "metrics.csv").exists()


def test_training_step_backpropagates_to_the_localisation_net_only():
    s = _set(4)
    lit = ColocLitModule(CNNEmbedding(CNN(28, channels=(4, 8))), lr=1e-2)
    loss = lit.training_step((s.images, s.boxes), 0)
    assert loss.ndim == 0
    assert loss > 0
    loss.backward()
    assert all(p.grad is not None for p in lit.transformer.parameters())
    assert all(p.grad is None for p in lit.encoder.parameters())


def test_window_bound_anneals_to_its_final_value_and_bounds_the_boxes(tmp_path):
    import pytest

    lit = ColocLitModule(CNNEmbedding(CNN(28, channels=(4, 8))), scale_range=(0.25, 0.6), final_max_scale=0.4,
                         anneal=0.5, steps=10)
    assert [round(lit.max_scale(t), 3) for t in (0, 1, 5, 10)] == [0.6, 0.56, 0.4, 0.4]
    with pytest.raises(ValueError, match="final_max_scale"):
        ColocLitModule(CNNEmbedding(CNN(28, channels=(4, 8))), scale_range=(0.25, 0.6), final_max_scale=0.7)
    with pytest.raises(ValueError, match="anneal"):
        ColocLitModule(CNNEmbedding(CNN(28, channels=(4, 8))), anneal=0.0)
    res = fit_coloc(_set(), CNN(28, channels=(4, 8)), steps=4, eval_every=2, final_max_scale=0.3, anneal=0.5)
    final = torch.tensor(res["history"][-1]["params"])
    assert (final[:, 0] <= 0.3 + 1e-6).all()  # every window within the annealed bound at the end
    assert torch.tensor(res["history"][0]["params"])[:, 0].eq(0.5).all()  # and started at the initial scale


def test_zoom_schedule_holds_the_scale_in_a_band_below_the_moving_bound():
    import pytest

    enc = CNNEmbedding(CNN(28, channels=(4, 8)))
    lit = ColocLitModule(enc, scale_range=(0.25, 1.0), init_scale=0.975, start_max_scale=1.0, band=0.05,
                         final_max_scale=0.4, anneal=0.5, steps=10)
    bounds = [tuple(round(v, 3) for v in lit.scale_bounds(t)) for t in (0, 1, 5, 10)]
    assert bounds == [(0.95, 1.0), (0.83, 0.88), (0.35, 0.4), (0.35, 0.4)]  # 1 -> 0.4 over 5 steps, band 0.05
    s = _set(4)
    crops, params = lit(s.images)  # before any step the head already sits in the step-0 band, at init_scale
    assert torch.allclose(params[:, 0], torch.full((4,), 0.975))
    lit.transformer.head.weight.data.normal_(0, 10.0)  # whatever the regression says, the band holds
    for t in (0, 3, 10):
        lit.transformer.head.lo, lit.transformer.head.hi = lit.scale_bounds(t)
        scale = lit(s.images)[1][:, 0]
        lo, hi = lit.scale_bounds(t)
        assert (scale >= lo - 1e-6).all()
        assert (scale <= hi + 1e-6).all()
    with pytest.raises(ValueError, match="init_scale"):  # 0.5 is outside the step-0 band (0.95, 1.0)
        ColocLitModule(enc, scale_range=(0.25, 1.0), init_scale=0.5, start_max_scale=1.0, band=0.05)
    with pytest.raises(ValueError, match="start_max_scale"):
        ColocLitModule(enc, scale_range=(0.25, 0.6), start_max_scale=0.9)
    with pytest.raises(ValueError, match="band"):
        ColocLitModule(enc, scale_range=(0.25, 1.0), init_scale=0.9, start_max_scale=1.0, band=0.0)


def test_heatmap_localisation_follows_the_zoom_schedule(tmp_path):
    from stnkit.models.localization import SoftArgmaxWindowHead

    res = fit_coloc(_set(), CNN(28, channels=(4, 8)), steps=4, eval_every=2, scale_range=(0.25, 1.0),
                    init_scale=0.975, start_max_scale=1.0, band=0.05, final_max_scale=0.4, anneal=0.5,
                    localization="heatmap")
    scales = [torch.tensor(h["params"])[:, 0] for h in res["history"]]
    assert torch.allclose(scales[0], torch.full((8,), 0.975))  # the step-0 band, centred by the uniform map
    assert ((scales[-1] >= 0.35 - 1e-6) & (scales[-1] <= 0.4 + 1e-6)).all()  # zoomed into the final band
    lit = ColocLitModule(CNNEmbedding(CNN(28, channels=(4, 8))), scale_range=(0.25, 1.0), init_scale=0.975,
                         start_max_scale=1.0, band=0.05, final_max_scale=0.4, steps=10, localization="heatmap")
    assert isinstance(lit.transformer.head, SoftArgmaxWindowHead)
    s = _set(4)
    lit.training_step((s.images, s.boxes), 0).backward()
    assert all(p.grad is not None for p in lit.transformer.parameters())
