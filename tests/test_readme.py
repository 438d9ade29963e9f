"""The README runs as a reader would run it: the tour block on its own, then every Python
block in order in one namespace, its printed output compared where the README shows it
(`<!-- output -->`; tests/test_docs.py's rules and markers). Its shell commands are
checked, not run (`make test` is what CI runs): every `make` target they name exists, and
every example command parses with the script's own options."""
import pathlib
import re
import shlex
import sys

import pytest

from test_docs import blocks, run_page

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_tour_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- tour -->\s*```python\n(.*?)```\s*<!-- /tour -->", text, re.S)
    assert block, "README lost its tour block"
    monkeypatch.chdir(tmp_path)  # anything the tour writes lands in a temp dir
    exec(compile(block.group(1), "README-tour", "exec"), {})


def test_readme_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    langs = [lang for lang, _, _, _ in blocks(README.read_text())]
    assert langs.count("python") >= 3, "the README lost its Python blocks"
    run_page(README, tmp_path)


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set()
    for lang, code, _, _ in blocks(README.read_text()):
        if lang == "sh":
            named |= set(re.findall(r"^\s*make ([\w-]+)", code, re.M))
    named |= set(re.findall(r"`make ([\w-]+)`", README.read_text()))
    assert {"demo", "test", "test-deep", "docs"} <= named
    assert named <= targets, f"the README names make targets the Makefile lacks: {sorted(named - targets)}"


def example_commands(text):
    """(script, [arguments]) of every `python examples/X.py ...` command in the README."""
    out = []
    for m in re.finditer(r"python (examples/\w+\.py)([^`\n|]*)", text):
        args = [a for a in shlex.split(m.group(2).replace("[", " ").replace("]", " ")) if a != "..."]
        out.append((m.group(1), args))
    return out


@pytest.mark.parametrize("script, args", example_commands(README.read_text()),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_readme_example_commands_parse(script, args, monkeypatch, tmp_path):
    path = ROOT / script
    assert path.exists(), f"the README runs {script}, which does not exist"
    (tmp_path / "text.txt").write_text("some text " * 100)
    args = [str(tmp_path / "text.txt") if a in ("FILE", "tinyshakespeare.txt") else a for a in args]
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    module = __import__(path.stem)
    parse = getattr(module, "parse_args", None) or getattr(module, "parse", None)
    if parse is None:           # argparse inside main(): the options must be among its own
        sys.modules.pop(path.stem, None)
        source = path.read_text()
        unknown = [a for a in args if a.startswith("-") and f'"{a}"' not in source]
        assert not unknown, f"python {script}: no such options {unknown}"
        return
    try:
        parse(args)
    except SystemExit as e:
        pytest.fail(f"python {script} {' '.join(args)}: the script refuses these options ({e})")
    finally:
        sys.modules.pop(path.stem, None)
