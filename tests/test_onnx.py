"""ONNX export (``torch.onnx.export(..., dynamo=True)``) of every transform, checked in onnxruntime against eager."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import stnkit

ort = pytest.importorskip("onnxruntime")  # dev-only oracle
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning",
)

TRANSFORMS = ["affine", "attention", "translation", "similarity", "projective", "tps", "affine3d"]


class Warp(nn.Module):
    def __init__(self, transform, size, **kw):
        super().__init__()
        self.transform, self.size, self.kw = stnkit.transforms.get(transform), size, kw

    def forward(self, x, params):
        return stnkit.warp(x, params, self.transform, self.size, **self.kw)


def inputs(name, n=2, seed=0):
    t = stnkit.transforms.get(name)
    g = torch.Generator().manual_seed(seed)
    spatial = (5, 6, 7) if t.spatial_dims == 3 else (9, 10)
    x = torch.rand(n, 2, *spatial, generator=g)
    params = t.identity().expand(n, -1) + 0.1 * torch.randn(n, t.num_params, generator=g)
    return x, params, ((3, 4, 5) if t.spatial_dims == 3 else (6, 7))


def run_onnx(model, args, tmp_path, dynamo=True):
    path = tmp_path / "model.onnx"
    if dynamo:
        torch.onnx.export(model.eval(), args, dynamo=True, verbose=False).save(str(path))
    else:
        torch.onnx.export(model.eval(), args, str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def call(*tensors):
        feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), tensors, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return call


@pytest.mark.parametrize("name", TRANSFORMS)
def test_warp_round_trip(name, tmp_path):
    x, params, size = inputs(name)
    model = Warp(name, size)
    call = run_onnx(model, (x, params), tmp_path)
    x2, params2, _ = inputs(name, seed=1)  # other values than the export's example: nothing baked in
    with torch.no_grad():
        for a, b in ((x, params), (x2, params2)):
            np.testing.assert_allclose(call(a, b).numpy(), model(a, b).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_spatial_transformer_round_trip(name, tmp_path):
    x, _, size = inputs(name)
    loc = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 8), nn.Tanh())
    st = stnkit.SpatialTransformer(loc, name, output_size=size, in_features=8)
    with torch.no_grad():
        st.head.weight.normal_(std=0.1)  # a non-identity transform that depends on the input
    call = run_onnx(st, (x,), tmp_path)
    x2 = torch.rand_like(x)
    with torch.no_grad():
        for a in (x, x2):
            np.testing.assert_allclose(call(a).numpy(), st(a).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_fill_and_antialias_round_trip(name, tmp_path):
    x, params, _ = inputs(name)
    x = torch.rand(2, 2, 16, 16)
    model = Warp(name, (4, 5), padding_mode="fill", fill_value=torch.tensor([0.5, -1.0]), antialias=True)
    call = run_onnx(model, (x, params * 1.3), tmp_path)
    with torch.no_grad():
        np.testing.assert_allclose(call(x, params).numpy(), model(x, params).numpy(), atol=1e-5, rtol=0)


def test_projective_degenerate_w_round_trip(tmp_path):
    # w = h31 x + h32 y + 1 crosses zero inside the output: the guarded division (torch.where) exports too
    x, params, size = inputs("projective")
    params = params.clone()
    params[:, 6] = 2.5
    model = Warp("projective", size)
    call = run_onnx(model, (x, params), tmp_path)
    with torch.no_grad():
        np.testing.assert_allclose(call(x, params).numpy(), model(x, params).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_torchscript_exporter_not_baked(name, tmp_path):
    # torch.jit.trace-based export: the TPS basis and the fast paths must not become constants of the example
    x, params, size = inputs(name)
    model = Warp(name, size)
    call = run_onnx(model, (x, params), tmp_path, dynamo=False)
    x2, params2, _ = inputs(name, seed=1)
    with torch.no_grad():
        np.testing.assert_allclose(call(x2, params2).numpy(), model(x2, params2).numpy(), atol=1e-5, rtol=0)


def test_readme_export_snippet(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Export", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    session = ort.InferenceSession(str(tmp_path / "st.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 1, 16, 16)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, x[:, :, ::2, ::2].add(x[:, :, 1::2, 1::2]).add(x[:, :, ::2, 1::2])
                               .add(x[:, :, 1::2, ::2]).div(4).numpy(), atol=1e-5)  # identity TPS at half size
