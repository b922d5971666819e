import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # the ONNX exporter's own
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_python_block_runs_alone(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that save files write here
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_usage_example_prints_its_shapes(capsys):
    usage = README.read_text().split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    assert len(code.strip().splitlines()) <= 5
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([8, 1, 14, 14]) torch.Size([8, 6])"


def test_heatmap_attention_example_prints_its_shape(capsys):
    code = next(b for b in BLOCKS if "heatmap_localization" in b)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "torch.Size([8, 1, 20, 20])"


def test_fields_example_prints_no_folding_and_a_small_residual(capsys):
    code = next(b for b in BLOCKS if "stnkit.fields" in b)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "[0.0, 0.0] True tensor(True)"


def test_two_commands_match_ci():
    text = README.read_text()
    assert "./run.sh demo" in text
    assert "./run.sh test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./run.sh test" in ci
