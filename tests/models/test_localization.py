import pytest
import torch
from torch import nn

from stnkit.models.localization import SoftArgmaxWindowHead, heatmap_localization
from stnkit.sampling import warp


def reference_window(scores, map_size, stride, input_size, lo, hi, scale_logit):
    """Float64 loop: softmax over the cells, centre = sum of p * the cell's centre pixel in the normalised frame."""
    h, w = map_size
    ih, iw = input_size
    out = []
    for row in scores.double():
        p = torch.softmax(row, 0).view(h, w)
        tx = ty = 0.0
        for i in range(h):
            for j in range(w):
                px, py = (j + 0.5) * stride - 0.5, (i + 0.5) * stride - 0.5  # pixel-index coordinates
                tx += float(p[i, j]) * ((2 * px + 1) / iw - 1)  # align_corners=False: pixel k at (2k + 1) / W - 1
                ty += float(p[i, j]) * ((2 * py + 1) / ih - 1)
        s = lo + (hi - lo) / (1 + torch.exp(-torch.tensor(scale_logit, dtype=torch.float64)))
        out.append([float(s), tx, ty])
    return torch.tensor(out, dtype=torch.float64)


class TestSoftArgmaxWindowHead:
    @pytest.mark.parametrize(("map_size", "stride", "input_size"), [((15, 15), 8, (120, 120)), ((4, 6), 5, (21, 33))])
    def test_matches_a_loop_over_the_cells(self, map_size, stride, input_size):
        head = SoftArgmaxWindowHead(map_size, stride, input_size, (0.2, 0.6), 0.35)
        with torch.no_grad():
            head.scale_logit.fill_(0.7)
        scores = 3 * torch.randn(5, map_size[0] * map_size[1], generator=torch.Generator().manual_seed(0))
        ref = reference_window(scores, map_size, stride, input_size, 0.2, 0.6, 0.7)
        assert torch.allclose(head(scores).double(), ref, atol=1e-5)

    def test_uniform_map_is_a_centred_window_at_init_scale(self):
        head = SoftArgmaxWindowHead((15, 15), 8, (120, 120), (0.2, 0.4), 0.3)
        assert torch.allclose(head(torch.zeros(3, 225)), torch.tensor([0.3, 0.0, 0.0]).expand(3, 3), atol=1e-6)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_peaked_map_centres_the_window_on_that_cell(self, align_corners):
        # a bright stride x stride block at cell (i, j); the window of a map peaked there holds it in its centre
        size, stride, i, j = 64, 8, 2, 5
        head = SoftArgmaxWindowHead((8, 8), stride, size, (0.1, 0.5), 0.25, align_corners=align_corners)
        scores = torch.full((1, 64), -50.0)
        scores[0, i * 8 + j] = 50.0
        img = torch.zeros(1, 1, size, size)
        img[..., i * stride:(i + 1) * stride, j * stride:(j + 1) * stride] = 1.0
        with torch.no_grad():  # 2x zoom
            crop = warp(img, head(scores), "attention", (32, 32), align_corners=align_corners)[0, 0]
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        mass = crop.sum()
        assert mass > 0
        assert abs(float((crop * xs).sum() / mass) - 15.5) < 0.05  # centre of mass at the crop's centre
        assert abs(float((crop * ys).sum() / mass) - 15.5) < 0.05

    def test_gradcheck_scores_and_scale(self):
        head = SoftArgmaxWindowHead((3, 4), 2, (6, 8), (0.2, 0.6), 0.4).double()
        scores = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(head, (scores,))
        head(scores).sum().backward()
        assert head.scale_logit.grad is not None
        assert head.scale_logit.grad.abs() > 0

    def test_scale_stays_in_range_and_follows_changed_bounds(self):
        head = SoftArgmaxWindowHead((2, 2), 4, 8, (0.2, 0.6), 0.4)
        with torch.no_grad():
            head.scale_logit.fill_(40.0)
        assert torch.allclose(head(torch.zeros(1, 4))[:, 0], torch.tensor([0.6]))
        head.lo, head.hi = 0.1, 0.3
        assert torch.allclose(head(torch.zeros(1, 4))[:, 0], torch.tensor([0.3]))

    def test_float32_under_autocast(self):
        head = SoftArgmaxWindowHead((2, 2), 4, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(torch.randn(2, 4).bfloat16())
        assert out.dtype == torch.float32

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match=r"expects scores of shape \(N, 225\)"):
            SoftArgmaxWindowHead((15, 15), 8, 120)(torch.zeros(2, 224))
        with pytest.raises(ValueError, match="init_scale"):
            SoftArgmaxWindowHead((15, 15), 8, 120, (0.4, 0.2))
        with pytest.raises(ValueError, match="does not fit"):
            SoftArgmaxWindowHead((16, 16), 8, 120)


class TestHeatmapLocalization:
    @pytest.mark.parametrize(("size", "map_size", "stride"), [(120, (15, 15), 8), (60, (15, 15), 4),
                                                             ((84, 42), (42, 21), 2)])
    def test_map_size_stride_and_uniform_start(self, size, map_size, stride):
        net, got_size, got_stride = heatmap_localization(size)
        assert (got_size, got_stride) == (map_size, stride)
        hw = (size, size) if isinstance(size, int) else size
        scores = net(torch.rand(2, 1, *hw))
        assert scores.shape == (2, 1, *map_size)
        assert torch.all(scores == 0)  # zero-initialised score layer: the soft-argmax starts at the centre
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert convs[0].in_channels == 1
        assert convs[-1].out_channels == 1

    def test_head_learns_to_point_at_a_blob(self):
        # the net + head, trained to put the window's centre on a bright blob, end within a map cell of it
        torch.manual_seed(0)
        net, map_size, stride = heatmap_localization(32, map_input=32, channels=4)
        head = SoftArgmaxWindowHead(map_size, stride, 32, (0.2, 0.4), 0.3)
        opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=0.03)

        def batch(n=32):
            g = torch.Generator().manual_seed(n)
            pos = torch.randint(4, 28, (n, 2), generator=g)
            x = torch.zeros(n, 1, 32, 32)
            for k, (r, c) in enumerate(pos.tolist()):
                x[k, 0, r - 2:r + 2, c - 2:c + 2] = 1.0
            return x, (2 * pos.float()) / 32 - 1  # the blob's centre (pixel r - 0.5) in the normalised frame

        def error():
            with torch.no_grad():
                return float((head(net(x).flatten(1))[:, 1:].flip(1) - target).abs().mean())

        x, target = batch()
        start = error()
        for _ in range(150):
            loss = (head(net(x).flatten(1))[:, 1:].flip(1) - target).pow(2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        end = error()
        assert end < 0.25 * start
        assert end < 2 * stride / 32
