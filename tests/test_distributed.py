"""ev.distributed under a real `mpirun` (Open MPI from PyPI): the scripts in tests/mpi/
run on 1, 2 and 3 ranks, write what each rank saw to JSON, and these tests assert.

Needs the `mpi` extra (pip install -e ".[mpi]"; `make test` installs it); without
mpi4py or mpirun the MPI tests skip and say so, except under CI=true, where that is a
failure (tests/requires.py). No test reads a clock: a hang is a `timeout=` of the
mpirun call, a budget is counted in steps.
"""
import importlib.util
import json
import re
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import exprvm as ev
from exprvm.compiler.allreduce import plan_buckets
from requires import needs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi")
TINY_TEXT = ("the quick brown fox jumps over the lazy dog. " * 3 + "\n"
             "a stitch in time saves nine; the early bird catches the worm.\n") * 12


def _mpirun():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.path.exists(here) else shutil.which("mpirun")


MPIRUN = _mpirun()
needs_mpi = needs(importlib.util.find_spec("mpi4py") is not None and MPIRUN is not None,
                  'needs mpi4py and mpirun: pip install -e ".[mpi]"')


def mpirun(n, script, *args, timeout=90):
    """Run tests/mpi/<script> (or any path) on n ranks; returns the CompletedProcess. A job
    still running after `timeout` seconds has hung: the test fails with its output."""
    # NOTE: one machine: shared memory only. Probing the network transports (ofi, ucx,
    # tcp) adds about a second to every launch.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               OMPI_MCA_btl="self,sm", OMPI_MCA_pml="ob1")
    path = script if os.path.isabs(script) else os.path.join(SCRIPTS, script)
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", str(n), sys.executable, path,
           *map(str, args)]
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        pytest.fail(f"mpirun -n {n} {os.path.basename(path)} {' '.join(map(str, args))} hung "
                    f"(killed after {timeout} s):\n{out[-3000:]}")


def ranks(out, n):
    return [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(n)]


def run_ok(n, script, *args):
    proc = mpirun(n, script, *args)
    assert proc.returncode == 0, f"mpirun -n {n} {script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# -- without MPI ------------------------------------------------------------------

def test_import_needs_no_mpi4py():
    code = "import sys; sys.modules['mpi4py'] = None; import exprvm as ev; print(ev.distributed.init.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "init", proc.stderr


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py now raises ImportError
    with pytest.raises(ev.distributed.DistributedError, match=r"pip install \"exprvm\[mpi\]\"") as e:
        ev.distributed.init()
    assert isinstance(e.value, ev.ExprError)


def test_comm_must_be_a_context():
    g = ev.Graph()
    w = g.vector("w", 3, value=np.ones(3))
    cost = ev.sum(w * w)
    ev.grad(cost, [w])
    with pytest.raises(ev.CompileError, match="ev.distributed.init"):
        ev.TapeMachine(g, outputs=[cost], comm="world")


def test_plan_buckets_greedy_per_dtype():
    f8, f4 = np.dtype(np.float64), np.dtype(np.float32)
    assert plan_buckets([(40, f8), (40, f8), (40, f8)], 100) == [[0, 1], [2]]
    assert plan_buckets([(300, f8), (10, f8)], 100) == [[0], [1]]          # too big: alone
    assert plan_buckets([(10, f8), (10, f4), (10, f8)], 100) == [[1], [0, 2]]   # by last item
    assert plan_buckets([], 100) == []


# -- under mpirun -------------------------------------------------------------------

@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}ranks")
def equivalence(request, tmp_path_factory):
    if importlib.util.find_spec("mpi4py") is None or MPIRUN is None:
        pytest.skip('needs mpi4py and mpirun: pip install -e ".[mpi]"')
    n = request.param
    out = tmp_path_factory.mktemp(f"eq{n}")
    run_ok(n, "equivalence.py", out)
    return n, ranks(out, n)


@needs_mpi
@pytest.mark.parametrize("case,tol", [("tape-float64", 1e-10), ("tape-float32", 1e-5),
                                      ("lisp-float64", 1e-10), ("lisp-float32", 1e-5),
                                      ("tape-float64-blocking", 1e-10)])
def test_n_ranks_train_like_one_process(equivalence, case, tol):
    """N ranks with B/N rows each, after 12 Adam steps, agree with one process with B rows."""
    n, results = equivalence
    for r in results:
        c = r["cases"][case]
        assert r["size"] == n
        assert c["rel"] < tol, f"rank {r['rank']}: {case} differs from one process by {c['rel']:.2e}"
        assert c["spread"] < tol / 100, f"ranks disagree by {c['spread']:.2e}"
    if "loss_first" in results[0]["cases"][case]:
        c = results[0]["cases"][case]
        assert c["loss_last"] < c["loss_first"]                 # it trained
        assert abs(c["loss_last"] - c["ref_loss_last"]) <= 1e-4 * abs(c["ref_loss_last"])


@needs_mpi
def test_compiled_allreduce_in_the_tape(equivalence):
    n, results = equivalence
    for r in results:
        p = r["program"]
        assert len(p["starts"]) >= 2, "64-byte buckets: several buckets expected"
        assert len(p["waits"]) == len(p["starts"])
        assert p["waits"] == list(range(p["n_instrs"] - len(p["waits"]), p["n_instrs"]))   # at the end
        assert p["starts"][0] < p["last_node_instr"], "the first bucket starts before the backward pass ends"
        assert p["starts_follow_producers"], "a bucket starts right after its last gradient is written"
        assert p["verified"] and p["grads_are_views"]
        assert "allreduce_start[mpi]" in p["text"] and "; bucket 0: " in p["text"]
        assert f"average over {n} rank" in p["text"]
        assert p["grad_vs_mean_of_local"] < 1e-12     # .grad is the mean of the ranks' own gradients
        assert p["grads_spread"] == 0.0
    assert results[0]["program"]["svg_has_allreduce"]


@needs_mpi
def test_allreduce_grads_shard_mean_any(equivalence):
    n, results = equivalence
    for r in results:
        d = r["direct"]
        np.testing.assert_allclose(d["a"], np.full((2, 3), (n - 1) / 2))
        np.testing.assert_allclose(d["b"], np.arange(4) * (n + 1) / 2, rtol=1e-6)
        assert d["b_dtype"] == "float32" and d["c_is_none"]
        assert d["mean"] == (n - 1) / 2 and d["any_rank1"] == (n > 1) and not d["any_none"]
        assert d["max"] == 0.1 * (n - 1) + 0.05        # the same float on every rank, exactly
        parts = d["shards"]
        assert sorted(i for p in parts for i in p) == list(range(10))      # disjoint, complete
        assert d["shards_again"] == parts                                  # reproducible
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [i for p in d["plain_shards"] for i in p] == list(range(7))  # no seed: in order
    assert results[0]["direct"]["shards"] == results[-1]["direct"]["shards"]   # same on every rank


@needs_mpi
def test_mismatched_params_refused_on_every_rank(tmp_path, n=3):
    """Rank 1 differs; ranks 0 and 2 agree with each other and are refused too."""
    run_ok(n, "mismatch.py", tmp_path)
    expect = {"name": "'other.", "shape": "7", "dtype": "float32"}      # what rank 1 has
    for r in ranks(tmp_path, n):
        for case, paths in r["cases"].items():
            for path, msg in paths.items():
                assert msg is not None, f"rank {r['rank']}: {case} mismatch not refused by {path}"
                assert "differ" in msg and expect[case] in msg.split("rank 1 has")[1], msg
        assert r["after"] == 1.0


@needs_mpi
def test_exception_on_one_rank_ends_the_job(n=3):
    """Rank 1 raises at step 3 while ranks 0 and 2 wait in the all-reduce for its gradients."""
    proc = mpirun(n, "fault.py", timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "RuntimeError: rank 1 fails at step 3" in out
    assert "aborts the MPI job" in out and "not reached" not in out


@needs_mpi
@pytest.mark.parametrize("mode, said", [
    ("code", "rank 1 left the job"),
    ("message", "rank 1 gives up at step 3"),
    ("clean", "rank 1 left the job"),
])
def test_a_rank_leaving_by_sys_exit_ends_the_job(mode, said, n=3):
    """Rank 1 calls sys.exit(3), sys.exit("message") or sys.exit(0) at step 3 while ranks
    0 and 2 wait in the all-reduce for its gradients: the job ends, non-zero, saying so."""
    proc = mpirun(n, "leave.py", mode, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert said in out and "waits in the gradients' all-reduce" in out, out[-3000:]
    assert "aborts the MPI job" in out and "not reached" not in out


@needs_mpi
def test_every_rank_leaving_by_sys_exit_0_together_exits_0(n=3):
    proc = mpirun(n, "leave.py", "together", timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert sorted(ln for ln in proc.stdout.splitlines() if "leaves" in ln) == \
        [f"rank {r} leaves at step 3" for r in range(n)]
    assert "abort" not in out


@needs_mpi
def test_checkpoint_saved_on_2_ranks_resumes_on_3(tmp_path):
    ck = tmp_path / "ckpt.npz"
    run_ok(2, "checkpoint.py", "save", tmp_path / "a", ck)
    assert ck.exists() and sorted(os.listdir(tmp_path)) == ["a", "ckpt.npz"]   # no temp file left
    assert ev.load(ck).section("meta")["ranks"] == 2
    run_ok(3, "checkpoint.py", "resume", tmp_path / "b", ck)
    for r in ranks(tmp_path / "b", 3):
        assert r["saved_by_ranks"] == 2
        assert r["rel"] < 1e-10, f"rank {r['rank']}: resumed run differs by {r['rel']:.2e}"
        assert "could not load" in r["missing"]


@needs_mpi
def test_char_rnn_distributed(tmp_path):
    script = os.path.join(ROOT, "examples", "char_rnn.py")
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    ck = tmp_path / "ck.npz"
    args = ["--distributed", "--smoke", "--steps", "6", "--text", tmp_path / "tiny.txt", "--sample", "20",
            "--out", tmp_path, "--checkpoint", ck, "--svg", ""]
    out = run_ok(2, script, *args).stdout
    assert out.count("step 2 loss") == 1 and out.count("step 6 loss") == 1     # rank 0 prints
    assert "data parallel: 2 ranks" in out and out.count("--- sample") == 1
    assert (tmp_path / "loss.png").exists() and ck.exists()
    state = ev.load(ck).section("step")
    assert {k.split("/")[0] for k in state} == {"rank0", "rank1"}       # every rank's hidden state
    args += ["--sample", "0", "--plot", ""]
    out = run_ok(2, script, *args).stdout                 # the same ranks: the streams go on
    assert "resumed from" in out and "afresh" not in out and "step 12 loss" in out
    out = run_ok(3, script, *args).stdout                 # another rank count: fresh streams
    assert "resumed from" in out and "afresh" in out and "step 18 loss" in out


@needs_mpi
def test_char_rnn_distributed_stops_by_the_clock_on_every_rank_together(tmp_path):
    # A time budget read on each rank's own clock would stop the ranks at different
    # steps (a hang in the next collective) and give them different lrs.
    script = os.path.join(ROOT, "examples", "char_rnn.py")
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    ck = tmp_path / "ck.npz"
    out = run_ok(2, script, "--distributed", "--smoke", "--steps", "1000000", "--minutes", "0.01",
                 "--text", tmp_path / "tiny.txt", "--sample", "0", "--out", tmp_path, "--plot", "",
                 "--svg", "", "--checkpoint", ck).stdout
    m = re.search(r"^(\d+) steps in \S+ s", out, re.M)
    steps = int(m.group(1))
    assert 0 < steps < 1000000                  # stopped by the clock, not by --steps
    # both ranks stopped at that step: the checkpoint (a collective) holds it and both states
    assert f"saved {ck} at step {steps}" in out
    assert {k.split("/")[0] for k in ev.load(ck).section("step")} == {"rank0", "rank1"}


@needs_mpi
def test_data_loader_shards_are_disjoint_on_every_rank(tmp_path, n=2):
    run_ok(n, "loader.py", tmp_path)
    results = ranks(tmp_path, n)
    N, per = 23, 23 // n
    ds = ev.data.ArrayDataset(np.arange(N, dtype=np.float32)[:, None], np.arange(N))
    whole = ev.data.DataLoader(ds, batch_size=N, shuffle=True, seed=11)
    for epoch in range(2):
        parts = [[i for b in r["epochs"][epoch] for i in b] for r in results]
        assert all(len(p) == per for p in parts)                       # equal steps everywhere
        assert not set(parts[0]) & set(parts[1])                       # disjoint
        order = next(iter(whole))[1].tolist()                          # the one order, cut in n
        assert parts[0] + parts[1] == order[:per * n]
    assert results[0]["epochs"][0] != results[0]["epochs"][1]          # reshuffled per epoch
    assert all(r["same_steps"] for r in results)
    firsts = [r["stream_firsts"] for r in results]
    assert firsts[0][0] == 0 and firsts[1][0] == 500 and len(firsts[0]) == len(firsts[1])


@needs_mpi
def test_the_trainer_on_two_ranks(tmp_path, n=2):
    run_ok(n, "trainer.py", tmp_path)
    results = ranks(tmp_path, n)
    for r in results:
        assert r["rel"] < 1e-12, f"rank {r['rank']}: {r['rel']:.2e} from one process on the union of the batches"
        assert r["params"] == results[0]["params"]                  # every rank the same model
        assert r["resumed_equal"] and r["resumed_from"] == r["steps"] // 2 + 1
        assert r["val"] == pytest.approx(r["val_want"], rel=1e-12)   # the sharded evaluation's mean
        assert r["log"] == results[0]["log"] if r["rank"] == 0 else r["log"] == []
    assert results[0]["printed"].count("step 2 loss") == 1 and results[1]["printed"] == ""
    lines = (tmp_path / "whole" / "log.jsonl").read_text().splitlines()
    assert len(lines) == results[0]["steps"] // 2 == len(results[0]["log"])     # rank 0 alone wrote
    assert sorted(os.listdir(tmp_path)) == ["ck.npz", "first", "rank0.json", "rank1.json", "resumed", "whole"]
