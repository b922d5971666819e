"""Outside oracles: MONAI's Warp and DVF2DDF, VoxelMorph's SpatialTransformer and IntegrateVelocityField.

Both peers take voxel-unit fields in (i, j[, k]) order with align_corners=True, so they must equal
``stnkit.fields.warp(..., units="voxel", order="ij", align_corners=True)``, values and gradients. Their imports are
slow (about 10 s together), so they are loaded once per module, here only.
"""

import importlib
import warnings

import pytest
import torch

from stnkit import fields

SIZES = [(7, 9), (4, 5, 6)]
VOXEL_IJ = {"units": "voxel", "order": "ij", "align_corners": True}


@pytest.fixture(scope="module")
def monai_blocks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("monai.networks.blocks")


@pytest.fixture(scope="module")
def vxm_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("voxelmorph.nn.modules")


def quiet(factory, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns that it uses torch's grid_sample
        return factory(*args, **kwargs)


def inputs(size, scale=2.0):
    x = torch.rand(2, 3, *size, dtype=torch.float64, requires_grad=True)
    d = (scale * torch.randn(2, len(size), *size, dtype=torch.float64)).requires_grad_()
    return x, d


def values_and_grads(fn, *tensors):
    out = fn(*tensors)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weight).sum(), tensors)
    return out.detach(), grads


def assert_same(ours, theirs):
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-10)
    for g_ours, g_theirs in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", SIZES)
def test_monai_warp(monai_blocks, size):
    x, d = inputs(size)
    theirs = quiet(monai_blocks.Warp, mode="bilinear", padding_mode="zeros")
    assert_same(values_and_grads(lambda x, d: fields.warp(x, d, **VOXEL_IJ), x, d),
                values_and_grads(lambda x, d: theirs(x, d), x, d))


@pytest.mark.parametrize("size", SIZES)
def test_monai_dvf2ddf(monai_blocks, size):
    _, v = inputs(size, scale=3.0)
    theirs = quiet(monai_blocks.DVF2DDF, num_steps=7, mode="bilinear", padding_mode="zeros")
    assert_same(values_and_grads(lambda v: fields.integrate(v, 7, **VOXEL_IJ), v),
                values_and_grads(theirs, v))


@pytest.mark.parametrize("size", SIZES)
def test_voxelmorph_spatial_transformer(vxm_modules, size):
    x, d = inputs(size)
    theirs = vxm_modules.SpatialTransformer(interpolation_mode="linear", align_corners=True)
    assert_same(values_and_grads(lambda x, d: fields.warp(x, d, **VOXEL_IJ), x, d),
                values_and_grads(lambda x, d: theirs(x, d), x, d))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("steps", [1, 7])
def test_voxelmorph_integrate(vxm_modules, size, steps):
    _, v = inputs(size, scale=3.0)
    theirs = vxm_modules.IntegrateVelocityField(steps=steps, interpolation_mode="linear", align_corners=True)
    assert_same(values_and_grads(lambda v: fields.integrate(v, steps, **VOXEL_IJ), v),
                values_and_grads(theirs, v))


def test_normalized_xy_field_reaches_monai_by_converters(monai_blocks):
    x, d = inputs((6, 8))
    ours = fields.warp(x, d, align_corners=True)  # normalised (x, y)
    d_monai = fields.convert(d, to_units="voxel", to_order="ij", align_corners=True)
    theirs = quiet(monai_blocks.Warp, mode="bilinear", padding_mode="zeros")(x, d_monai)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
