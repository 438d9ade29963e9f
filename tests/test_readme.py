"""The README's tour runs as written."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_tour_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tour -->\s*```python\n(.*?)```\s*<!-- /tour -->", text, re.S)
    assert block, "README lost its tour block"
    monkeypatch.chdir(tmp_path)  # anything the tour writes lands in a temp dir
    exec(compile(block.group(1), "README-tour", "exec"), {})
