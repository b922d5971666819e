"""The layer's core behaviours on every device of the matrix (``--device cpu|cuda|all``, see tests/conftest.py).

Each case is checked against torch's own ops on the same device: ``transform.grid`` + ``F.grid_sample``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stnkit
from stnkit import transforms

NAMES_2D = [n for n in transforms.available() if n != "affine3d"]
PADDINGS = ("zeros", "border", "reflection")


def perturbed_params(name, n, device, dtype=torch.float32):
    t = transforms.get(name)
    identity = t.identity().to(device=device, dtype=dtype)
    return t, identity + 0.1 * torch.randn(n, identity.numel(), device=device, dtype=dtype)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("name", NAMES_2D)
def test_warp_matches_grid_sample(device, name, padding):
    t, p = perturbed_params(name, 3, device)
    x = torch.rand(3, 2, 9, 11, device=device)
    got = stnkit.warp(x, p, name, (5, 7), padding_mode=padding)
    ref = F.grid_sample(x, t.grid(p, (5, 7)), padding_mode=padding, align_corners=False)
    assert got.device.type == device.type
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_affine_warp_matches_affine_grid(device):
    theta = torch.eye(2, 3, device=device).expand(2, 2, 3) + 0.1 * torch.randn(2, 2, 3, device=device)
    x = torch.rand(2, 3, 8, 6, device=device)
    for align_corners in (False, True):
        ref = F.grid_sample(
            x, F.affine_grid(theta, (2, 3, 5, 4), align_corners=align_corners), align_corners=align_corners
        )
        got = stnkit.warp(x, theta.reshape(2, 6), "affine", (5, 4), align_corners=align_corners)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES_2D)
def test_warp_gradients_match_grid_sample(device, name):
    t, p = perturbed_params(name, 2, device, torch.float64)
    x = torch.rand(2, 2, 7, 6, device=device, dtype=torch.float64)
    g = torch.randn(2, 2, 4, 5, device=device, dtype=torch.float64)
    xs, ps = x.clone().requires_grad_(), p.clone().requires_grad_()
    got = torch.autograd.grad(stnkit.warp(xs, ps, name, (4, 5), padding_mode="border"), (xs, ps), g)
    xr, pr = x.clone().requires_grad_(), p.clone().requires_grad_()
    ref_out = F.grid_sample(xr, t.grid(pr, (4, 5)), padding_mode="border", align_corners=False)
    ref = torch.autograd.grad(ref_out, (xr, pr), g)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


def test_border_gradient_groundtruth_at_last_pixel(device):
    x = torch.arange(5.0, device=device).expand(1, 1, 5, 5).contiguous()
    p = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]], device=device, requires_grad=True)
    out = stnkit.warp(x, p, "affine", (1, 1), padding_mode="border", align_corners=True)
    (g,) = torch.autograd.grad(out.sum(), p)
    assert out.item() == 4.0
    assert g.abs().max().item() == 0.0


@pytest.mark.parametrize("fill", [0.25, "per-channel"])
def test_fill_matches_ones_mask_construction(device, fill):
    t, p = perturbed_params("affine", 2, device)
    p = p * 1.6  # zoom out: much of the output lies outside the input
    x = torch.rand(2, 3, 8, 8, device=device)
    value = torch.tensor([0.1, 0.5, 0.9], device=device) if fill == "per-channel" else fill
    got = stnkit.warp(x, p, "affine", (6, 6), padding_mode="fill", fill_value=value)
    grid = t.grid(p, (6, 6))
    mask = F.grid_sample(torch.ones_like(x[:, :1]), grid, align_corners=False)
    colour = value.view(1, 3, 1, 1) if isinstance(value, torch.Tensor) else value
    ref = F.grid_sample(x, grid, align_corners=False) + (1 - mask) * colour
    assert (mask < 1).any()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_antialias_matches_a_supersampled_reference(device):
    t, p = perturbed_params("attention", 2, device)
    x = torch.rand(2, 1, 24, 24, device=device)
    got = stnkit.warp(x, p, "attention", (6, 6), antialias=True)
    s = 4  # ceil(24 / 6)
    fine = F.grid_sample(x, t.grid(p, (6 * s, 6 * s)), align_corners=False)
    ref = F.avg_pool2d(fine, s)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    plain = stnkit.warp(x, p, "attention", (6, 6))
    assert (got - plain).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES_2D)
def test_nan_params_give_nan_output(device, name):
    _, p = perturbed_params(name, 2, device)
    p[1, 0] = float("nan")
    out = stnkit.warp(torch.rand(2, 1, 6, 6, device=device), p, name, (4, 4))
    assert out[1].isnan().any()
    assert not out[0].isnan().any()


def test_spatial_transformer_runs_and_trains_on_device(device):
    loc = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    layer = stnkit.SpatialTransformer(loc, "affine", (4, 4), in_features=8).to(device)
    x = torch.rand(3, 1, 8, 8, device=device)
    out = layer(x)
    out.sum().backward()
    assert out.shape == (3, 1, 4, 4)
    assert out.device.type == device.type
    assert layer.head.bias.grad is not None
    identity = layer.transform.identity().to(device).expand(3, -1)
    torch.testing.assert_close(out, stnkit.warp(x, identity, "affine", (4, 4)))  # identity-initialised head
