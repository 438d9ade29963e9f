"""examples/digits_convnet.py in smoke mode, as a user runs it, on both machines: the
loss goes down, the test accuracy is far above chance, and the figures are written."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn", reason="the example needs scikit-learn (pip install exprvm[examples])")


@pytest.mark.parametrize("machine", ["tape", "lisp"])
def test_digits_convnet_smoke(tmp_path, machine):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "digits_convnet.py"), "--smoke",
                           "--machine", machine, "--out", "figs"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    first, last = map(float, re.search(r"^loss first (\S+) last (\S+)$", out, re.M).groups())
    assert last < 0.8 * first
    epochs = re.findall(r"^epoch (\d+) loss \S+ test accuracy (\S+)", out, re.M)
    assert [int(e) for e, _ in epochs] == [1, 2, 3]
    acc = float(re.search(r"^test accuracy (\S+) after 3 epochs", out, re.M).group(1))
    assert acc > 0.3            # 10 classes: chance is 0.1
    figs = tmp_path / "figs"
    assert (figs / "digits_curves.png").stat().st_size > 1000
    assert (figs / "digits_confusion.png").stat().st_size > 1000
    svg = (figs / "digits_convnet.svg").read_text()
    assert svg.lstrip().startswith("<") and "conv2d" in svg and "batch_norm" in svg


def test_conv_benchmark_runs_in_smoke_mode(tmp_path):
    """Only that it runs and that its rows agree (it checks them against the handwritten
    numpy step); the timings are for a quiet machine, never for a test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_conv.py"), "--smoke"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in ("numpy (handwritten im2col)", "exprvm TapeMachine (c)", "exprvm TapeMachine (numpy)",
                "exprvm LispMachine (graph per step)"):
        assert row in proc.stdout
