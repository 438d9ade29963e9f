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


@pytest.mark.parametrize("source", ["helper", "auto"])
def test_onnx_roundtrip_example_runs_fine_tunes_and_exports(tmp_path, source):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_roundtrip.py"), "--smoke",
                           "--source", source, "--out", "out"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    diffs = [float(d) for d in re.findall(r"max relative difference (\S+)", out)]
    assert len(diffs) == 2 and max(diffs) <= 1e-5, out
    first, last = map(float, re.search(r"^loss first (\S+) last (\S+)$", out, re.M).groups())
    assert last < first - 0.1
    assert "; planned" in out                  # the program was printed
    onnx.checker.check_model(onnx.load(tmp_path / "out" / "mlp_finetuned.onnx"))
