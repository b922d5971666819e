import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


#: what a block prints, for the blocks that print (keyed by a line of the block)
PRINTS = {
    'transform="affine", output_size=(14, 14)': "torch.Size([8, 1, 14, 14]) torch.Size([8, 6])",
    "heatmap_localization(120)": "torch.Size([8, 1, 20, 20])",
    "fields.integrate(v, steps=7)": "[0.0, 0.0] True tensor(True)",  # no folding, a small inverse residual
}


def test_every_printing_block_is_known():
    assert all(sum(key in b for b in BLOCKS) == 1 for key in PRINTS)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # the ONNX exporter's own
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_python_block_runs_alone(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # blocks that save files write here
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
    expected = [line for key, line in PRINTS.items() if key in BLOCKS[index]]
    if expected:
        assert capsys.readouterr().out.strip() == expected[0]


def test_usage_example_is_five_lines():
    usage = README.read_text().split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    assert len(code.strip().splitlines()) <= 5


def test_two_commands_match_ci():
    text = README.read_text()
    assert "./run.sh demo" in text
    assert "./run.sh test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./run.sh test" in ci
