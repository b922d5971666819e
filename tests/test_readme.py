import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_usage_example_runs(capsys):
    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    assert len(code.strip().splitlines()) <= 5
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([8, 1, 14, 14]) torch.Size([8, 6])"


def test_heatmap_attention_example_runs(capsys):
    usage = README.read_text().split("## Usage", 1)[1].split("\n## ", 1)[0]
    first, second = re.findall(r"```python\n(.*?)```", usage, re.S)[:2]
    exec(compile(first + second, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "torch.Size([8, 1, 20, 20])"


def test_two_commands_match_ci():
    text = README.read_text()
    assert "./run.sh demo" in text
    assert "./run.sh test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./run.sh test" in ci
