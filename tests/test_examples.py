"""Every example runs in smoke mode as a user would run it, and its loss goes down."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import exprvm as ev

ROOT = pathlib.Path(__file__).resolve().parents[1]
MACHINES = ["lisp"] + (["tape"] if hasattr(ev, "TapeMachine") else [])
TINY_TEXT = ("the quick brown fox jumps over the lazy dog. " * 3 + "\n"
             "a stitch in time saves nine; the early bird catches the worm.\n") * 12


def run(tmp_path, script, *args):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def first_last(out):
    m = re.search(r"^loss first (\S+) last (\S+)$", out, re.M)
    assert m, f"no 'loss first X last Y' line in:\n{out}"
    return float(m.group(1)), float(m.group(2))


def step_losses(out):
    return [(int(s), float(x)) for s, x in re.findall(r"^step (\d+) loss (\S+)", out, re.M)]


@pytest.mark.parametrize("machine", MACHINES)
def test_char_rnn_learns_a_tiny_text(tmp_path, machine):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    out = run(tmp_path, "char_rnn.py", "--smoke", "--text", "tiny.txt", "--machine", machine,
              "--out", "figs")
    first, last = first_last(out)
    assert last < first - 0.2
    steps = step_losses(out)
    assert [s for s, _ in steps] == list(range(1, 31))
    assert steps[-1][1] < steps[0][1]
    sample = out.split("--- sample")[1].split("\n", 1)[1].rsplit("\n---", 1)[0]
    assert len(sample) == 40 and set(sample) <= set(TINY_TEXT)
    assert (tmp_path / "figs" / "loss.png").stat().st_size > 1000
    if hasattr(ev, "render"):
        assert (tmp_path / "figs" / "char_rnn_step.svg").read_text().lstrip().startswith("<")


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_char_rnn_other_cells_two_layers(tmp_path, cell):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    out = run(tmp_path, "char_rnn.py", "--smoke", "--text", "tiny.txt", "--cell", cell,
              "--layers", "2", "--steps", "15", "--sample", "10", "--plot", "", "--svg", "")
    first, last = first_last(out)
    assert last < first
    assert f"model: 2x{cell}" in out


def test_char_rnn_default_corpus_is_the_stdlib(tmp_path):
    out = run(tmp_path, "char_rnn.py", "--smoke", "--steps", "12", "--sample", "0",
              "--plot", "", "--svg", "")
    assert "stdlib source (1,000,000 chars)" in out
    first, last = first_last(out)
    assert last < first
    assert not (tmp_path / "out").exists()


def test_char_rnn_resumes_from_its_checkpoint(tmp_path):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    common = ["--smoke", "--text", "tiny.txt", "--steps", "2", "--checkpoint", "ck.npz",
              "--sample", "0", "--plot", "", "--svg", ""]
    out1 = run(tmp_path, "char_rnn.py", *common)
    assert "resumed" not in out1 and [s for s, _ in step_losses(out1)] == [1, 2]
    out2 = run(tmp_path, "char_rnn.py", *common)
    assert "resumed from ck.npz at step 2" in out2
    assert [s for s, _ in step_losses(out2)] == [3, 4]
    ck = ev.load(tmp_path / "ck.npz")
    assert int(ck.section("trainer")["step"]) == 4 and int(ck.section("loader")["position"]) == 4
    assert len(json.loads(str(ck.section("ext:history")["log"]))) == 4        # the losses of every step
    assert int(ck.section("optimizer")["step"]) == 4
    assert sorted(ck.section("step")) == ["layer0/0", "layer0/1"]             # the LSTM's h and c
    # The carried state is the last batch's final state, not zeros.
    assert abs(ck.section("step")["layer0/0"]).sum() > 0
    # A run with other sizes refuses the checkpoint instead of mixing shapes.
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "char_rnn.py"), *common,
                          "--hidden", "8"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "hidden=16" in bad.stderr + bad.stdout


@pytest.mark.parametrize("machine", ["tape", "lisp"])
def test_adding_problem_learns_with_lengths_varying_per_batch(tmp_path, machine):
    out = run(tmp_path, "adding_problem.py", "--smoke", "--machine", machine)
    first, last = first_last(out)
    assert last < first
    assert ("one program compiled once" if machine == "tape" else "a fresh graph per batch") in out
    assert re.search(r"model \S+, baseline \(predict 1.0\) \S+: (not )?solved", out)


def test_both_ways_of_training_the_adding_problem_give_the_same_losses(tmp_path):
    tape = first_last(run(tmp_path, "adding_problem.py", "--smoke", "--machine", "tape"))
    lisp = first_last(run(tmp_path, "adding_problem.py", "--smoke", "--machine", "lisp"))
    assert tape == pytest.approx(lisp, rel=1e-4)


def test_linear_regression_fits(tmp_path):
    out = run(tmp_path, "linear_regression.py", "--smoke")
    first, last = first_last(out)
    assert last < 0.1 * first
    rows = re.findall(r"^(sepal|petal) (length|width)\s+(\S+)\s+(\S+)$", out, re.M)
    assert len(rows) == 4
    assert all(abs(float(t) - float(v)) < 0.3 for _, _, t, v in rows)


def test_quickstart_tour_runs(tmp_path):
    out = run(tmp_path, "quickstart.py", "--out", "figs")
    assert "check_grad: True" in out and "autodiff == symbolic: True" in out
    first, last = first_last(out)
    assert last < first
    if hasattr(ev, "render"):
        assert (tmp_path / "figs" / "quickstart.svg").exists()


@pytest.mark.parametrize("device", ["cpu", "twin"])
def test_mlp_trains_on_the_cpu_and_the_device_program(tmp_path, device):
    if device == "twin":
        from exprvm.kernels import build_cuda
        if build_cuda.find_cxx() is None:
            pytest.skip("no C++ compiler for the CUDA host twin")
    out = run(tmp_path, "mlp.py", "--smoke", "--device", device)
    epochs = re.findall(r"^epoch (\d+) loss (\S+) test accuracy (\S+)$", out, re.M)
    assert [int(e) for e, _, _ in epochs] == [1, 2]
    assert float(epochs[1][1]) < float(epochs[0][1]) and float(epochs[1][2]) > 0.5
    moves = re.search(r"transfers: (.*)$", out, re.M).group(1)
    assert (moves == "none") == (device == "cpu"), out
