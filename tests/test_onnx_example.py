"""examples/onnx_roundtrip.py in smoke mode, as a user runs it: the imported model agrees
with ONNX Runtime, fine-tuning lowers the loss, and the exported model agrees again."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _check(out, folder):
    diffs = [float(d) for d in re.findall(r"max relative difference (\S+)", out)]
    assert len(diffs) == 2 and max(diffs) <= 1e-5, out
    first, last = map(float, re.search(r"^loss first (\S+) last (\S+)$", out, re.M).groups())
    assert last < first - 0.1
    assert "; planned" in out                  # the program was printed
    onnx.checker.check_model(onnx.load(folder / "mlp_finetuned.onnx"))


def test_onnx_roundtrip_example_runs_as_a_user_runs_it(tmp_path):
    """With a model built by onnx.helper, in a process of its own."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_roundtrip.py"), "--smoke", "--source",
                           "helper", "--out", "out"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "model from helper" in proc.stdout
    _check(proc.stdout, tmp_path / "out")


def test_onnx_roundtrip_example_with_pytorchs_model(tmp_path, capsys):
    """PyTorch's model (the example's default when torch is installed), run in-process."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import onnx_roundtrip
    finally:
        sys.path.remove(str(ROOT / "examples"))
    onnx_roundtrip.main(["--smoke", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "model from torch" in out
    _check(out, tmp_path / "out")
