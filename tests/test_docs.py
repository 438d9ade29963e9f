"""Every Python block of the documentation pages (docs/**/*.md) runs, in order within
its page, in one namespace per page; where a block is followed by an output block
(`<!-- output -->` above a fenced block) the test compares what it printed.

A block preceded by `<!-- requires: cuda -->` runs only where a CUDA device is; one
preceded by `<!-- requires: mpi -->` is a whole script, run on 2 ranks under a real
mpirun where mpi4py and mpirun are installed. A block preceded by
`<!-- fragment -->` is a fragment whose names the page's text defines (a signature
list); it is compiled, never run. Nothing else is left out.
"""
import contextlib
import io
import pathlib
import re
import sys

import pytest

import exprvm as ev
import exprvm.cuda as cuda

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if not {"_build", "api", "_ext"} & set(p.relative_to(DOCS).parts))

FENCE = re.compile(r"^(\s*)```\s*([\w{}-]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*(output|fragment|requires:\s*(cuda|mpi))\s*-->\s*$")


def blocks(text):
    """[(language, code, marker or None, line number)] of a Markdown page's fenced blocks."""
    lines = text.split("\n")
    out, i, marker = [], 0, None
    while i < len(lines):
        m = MARK.match(lines[i])
        if m:
            marker = m.group(2) or m.group(1)
            i += 1
            continue
        f = FENCE.match(lines[i])
        if f and f.group(2) != "":
            indent, lang, start = f.group(1), f.group(2), i + 1
            body = []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            out.append((lang, "\n".join(body) + "\n", marker, start))
            marker = None
        elif lines[i].strip():
            marker = None
        i += 1
    return out


def _steps(page):
    """(code, expected output or None, marker, line) for each Python block of a page."""
    steps = []
    for lang, code, marker, line in blocks(page.read_text()):
        if lang == "python":
            steps.append([code, None, marker, line])
        elif marker == "output":
            assert steps, f"{page}:{line}: an output block with no Python block before it"
            steps[-1][1] = code
    return steps


def _normal(text):
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)             # whatever a page writes lands in a temp dir
    run_page(page, tmp_path)


def run_page(page, tmp_path):
    """Run a Markdown page's Python blocks in order in one namespace (see the module
    docstring); skips the test, after the rest ran, where a block needs a GPU or MPI."""
    ops_before = set(ev.OPS)
    try:
        _run_page(page, tmp_path)
    finally:                                # ops a page defines (ev.defop) are its own
        for name in set(ev.OPS) - ops_before:
            del ev.OPS[name]


def _run_page(page, tmp_path):
    namespace = {"__name__": "__docs__"}
    skipped = []
    for code, want, marker, line in _steps(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        compiled = compile(code, where, "exec")
        if marker == "fragment":
            continue
        if marker == "mpi":
            if not _run_mpi(code, where, tmp_path):
                skipped.append(where)
            continue
        if marker == "cuda" and not cuda.is_available():
            skipped.append(where)
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compiled, namespace)
        if want is not None:
            assert _normal(out.getvalue()) == _normal(want), f"{where}: printed output differs"
    if skipped:
        pytest.skip(f"needs a CUDA device or MPI: {', '.join(skipped)} (the rest of the page ran)")


def _run_mpi(code, where, tmp_path):
    """Run one block as a script on 2 ranks, in tmp_path; False where MPI is missing."""
    import importlib.util
    import os
    import subprocess
    from test_distributed import MPIRUN
    if MPIRUN is None or importlib.util.find_spec("mpi4py") is None:
        return False
    script = tmp_path / "block.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + code)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", OMPI_MCA_btl="self,sm",
               OMPI_MCA_pml="ob1")
    proc = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable,
                           str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{where} failed on 2 ranks:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return True


def test_the_extractor_reads_markers_and_indented_blocks():
    text = ("text\n<!-- requires: cuda -->\n```python\nx = 1\n```\n<!-- output -->\n```text\n1\n```\n"
            "* item\n\n  ```python\n  y = 2\n  ```\n```sh\nls\n```\n")
    got = blocks(text)
    assert got == [("python", "x = 1\n", "cuda", 3), ("text", "1\n", "output", 7),
                   ("python", "y = 2\n", None, 12), ("sh", "ls\n", None, 15)]


def test_every_page_has_python_blocks_or_says_why():
    """A guide without a single runnable block is a guide nobody checks."""
    empty = [p.name for p in PAGES if not _steps(p) and "no code" not in p.read_text()]
    assert not empty, f"pages with no Python block: {empty}"


def test_the_guides_are_all_there():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    want = {"index.md", "getting-started.md"} | {f"guide/{n}.md" for n in (
        "graphs", "machines", "gradients", "control-flow", "models", "convnets", "distributed", "gpu",
        "fused-kernels", "rendering", "profiling", "performance", "architecture")}
    assert want <= names, sorted(want - names)
