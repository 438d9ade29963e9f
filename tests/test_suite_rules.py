"""Rules the test suite keeps about itself: property tests derandomized by default and a
deep run for contributors; the optional references (torch) and tools (MPI, network
namespaces) installed by `make test` and never skipped under CI=true."""
import os
import pathlib
import re
import subprocess
import sys

from hypothesis import settings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_profile_is_derandomized_and_the_deep_one_draws_ten_times_more():
    ci, deep = settings.get_profile("ci"), settings.get_profile("deep")
    assert ci.derandomize and not deep.derandomize
    assert deep.max_examples == 10 * ci.max_examples
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-deep: install\n\tHYPOTHESIS_PROFILE=deep \$\(PY\) -m pytest", make, re.M)
    import budget
    assert budget.DEEP_FACTOR == 10


def test_the_test_extra_installs_torch_exactly_as_pinned():
    text = (ROOT / "pyproject.toml").read_text()
    test_extra = re.search(r"^test = \[(.*)\]$", text, re.M).group(1)
    assert '"torch==2.13.0"' in test_extra
    assert re.search(r'pip install .*"\.\[test[,\]]', (ROOT / "Makefile").read_text())


def _run_needs(tmp_path, ci):
    (tmp_path / "test_probe.py").write_text(
        "from requires import needs\n\n"
        "@needs(False, 'the tool is missing')\n"
        "def test_uses_the_tool(tmp_path):\n"
        "    assert tmp_path\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_probe.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_tool_skips_with_its_reason_but_fails_under_ci(tmp_path):
    local = _run_needs(tmp_path, ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout and "the tool is missing" in local.stdout
    ci = _run_needs(tmp_path, ci=True)
    assert ci.returncode == 1 and "1 failed" in ci.stdout and "CI=true" in ci.stdout, ci.stdout
