import math

import pytest
import torch
from torch import nn

from stnkit.models import create
from stnkit.transforms import get
from stnkit.viz import attended_region, plot_transformations


class TestAttendedRegion:
    def test_identity_is_the_frame(self):
        t = get("affine")
        region = attended_region(t, t.identity()[None], (10, 20), points_per_edge=4)
        assert region.shape == (1, 17, 2)
        assert region[0, :, 0].min() == pytest.approx(-0.5)
        assert region[0, :, 0].max() == pytest.approx(19.5)
        assert region[0, :, 1].min() == pytest.approx(-0.5)
        assert region[0, :, 1].max() == pytest.approx(9.5)
        torch.testing.assert_close(region[0, 0], region[0, -1])  # closed

    def test_zoom_attends_the_centre(self):
        t = get("attention")  # (s, tx, ty)
        region = attended_region(t, torch.tensor([[0.5, 0.0, 0.0]]), (40, 40), points_per_edge=1)
        # the output frame samples the central half of the input: x, y in [9.5, 29.5]
        torch.testing.assert_close(region[0, :4], torch.tensor([[9.5, 9.5], [29.5, 9.5], [29.5, 29.5], [9.5, 29.5]]))

    def test_rotation_keeps_the_centre(self):
        a = math.pi / 6
        params = torch.tensor([[math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0]])
        region = attended_region(get("affine"), params, (42, 42), points_per_edge=8)
        torch.testing.assert_close(region[0, :-1].mean(0), torch.tensor([20.5, 20.5]), atol=1e-4, rtol=0)

    def test_tps_identity(self):
        t = get("tps")
        region = attended_region(t, t.identity()[None], (8, 8), points_per_edge=2)
        expected = attended_region(get("affine"), get("affine").identity()[None], (8, 8), points_per_edge=2)
        torch.testing.assert_close(region, expected, atol=1e-5, rtol=0)


class TestPlotTransformations:
    @pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
    def test_figure(self, transform):
        model = create("st-cnn", input_size=42, transform=transform, st_downsample="output_size")
        images, labels = torch.rand(6, 1, 42, 42), torch.arange(6)
        fig = plot_transformations(model, images, labels, ncols=3, title="t")
        axes = fig.get_axes()
        assert len(axes) == 2 * 6
        assert len(axes[0].lines) == 1  # the attended region
        assert len(axes[0].collections) == (1 if transform == "tps" else 0)  # control points
        assert axes[1].images[0].get_array().shape == (21, 21)  # the transformer's output
        preds = model(images).argmax(1)
        for i in range(6):  # every output's title: true label, prediction, a mark when wrong
            wrong = bool(preds[i] != labels[i])
            assert axes[2 * i + 1].get_title() == f"true {i}, pred {int(preds[i])}" + (" x" if wrong else "")
            assert (axes[2 * i + 1].title.get_color() == "tab:red") == wrong
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        assert texts == ["region the transformer samples (its output is to the right)", "red title, x: misclassified"]

    def test_needs_a_transformer(self):
        with pytest.raises(ValueError, match="no spatial transformer"):
            plot_transformations(nn.Identity(), torch.rand(1, 1, 8, 8))


def test_viz_is_the_only_matplotlib_user():
    import subprocess
    import sys

    code = ("import sys, stnkit, stnkit.models, stnkit.training, stnkit.cli; "
            "print('matplotlib' in sys.modules, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_error_curves_rejects_unknown_axis():
    from stnkit.viz import error_curves

    with pytest.raises(ValueError, match="'step', 'samples', 'train_s'"):
        error_curves([], "t", x="epochs")
