"""The README's Python API example runs as written, from the repository root, with the shipped models."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_api_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its marked Python API example"
    if not (ROOT / "models" / "detector-demo").is_dir():
        pytest.fail("models/detector-demo is missing: the shipped demo detector must be committed")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(match.group(1), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("(") and "'detector'" in out[0]  # size, factor, per-stage FLOPs
    assert out[2].startswith("torch.Size([3,")
