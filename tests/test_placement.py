"""Device placement of whole training steps (MLP, char-RNN, LSTM), testable without a
GPU: TapeMachine.compile(..., device="cuda") plans everything, and the host twin of the
CUDA library (tests/cuda_twin.py) runs the compiled steps end to end against the host."""
import sys
import pathlib

import numpy as np
import pytest

import exprvm as ev
import exprvm.cuda as cuda
from exprvm.compiler import ir
from exprvm.compiler.pipeline import select
from exprvm.compiler.placement import Placement, place
from exprvm.core import ancestors
from exprvm.errors import BackendError, IndexRangeError

from cuda_twin import device, twin  # noqa: F401  (fixtures)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import models  # noqa: E402

STEPS = ["mlp", "rnn_b32", "lstm_b32"]
TRANSFERS = ("to_device", "to_host")


def step(name, weights=None):
    w, data = models.weights_and_data(name, small=True)
    w = {k: v.copy() for k, v in (weights or w).items()}
    return models.graph(name, w, small=True), data


def char_model(cell="lstm", vocab=12, hidden=8, seq=5, batch=3):
    """The step of examples/char_rnn.py's CharModel (ev.nn blocks, int32 ids, carried state):
    (graph, loss, outputs, number of inputs)."""
    rnn = ev.nn.StackedRNN(cell, vocab, hidden, 1, name=cell, dtype=np.float32, seed=(0, 0))
    head = ev.nn.Linear(hidden, vocab, name="head", dtype=np.float32, seed=(0, 1))
    g = ev.Graph("char_rnn")
    ids = g.tensor("ids", (seq, batch), np.int32)
    targets = g.tensor("targets", (seq, batch), np.int32)
    state0 = rnn.state_inputs(g, batch)
    hs, final = rnn.unroll(ids, state0)
    loss = ev.nn.mean_cross_entropy(head(ev.stack(hs)), targets)
    ev.grad(loss, rnn.nodes(g) + head.nodes(g))
    return g, loss, [loss] + ev.nn.flat(final), 2 + len(ev.nn.flat(state0))


def compute(prog):
    return [i for i in prog.instrs if i.op not in TRANSFERS]


@pytest.mark.parametrize("name", STEPS)
def test_every_instruction_of_the_step_runs_on_the_device(name):
    m, _ = step(name)
    prog = ev.TapeMachine.compile(m.graph, [m.cost], device="cuda")
    assert prog.verify()
    host = [i.text() for i in compute(prog) if i.kernel != "cuda"]
    assert not host, host
    ops = {i.op for i in compute(prog)}
    assert "matmul" in ops and ("cross_entropy" in ops) and ("xent_grad" in ops)
    for ins in prog.instrs:     # every instruction reads and writes one device
        devs = {prog.registers[r].device for r in ins.ins} | {prog.registers[ins.out].device}
        assert len(devs) == 1 or ins.op in TRANSFERS, ins.text()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_instruction_of_the_char_rnn_example_runs_on_the_device(cell):
    g, loss, outputs, _ = char_model(cell)
    prog = ev.TapeMachine.compile(g, outputs, device="cuda")
    assert prog.verify()
    host = [i.text() for i in compute(prog) if i.kernel != "cuda"]
    assert not host, host


def _placement(m):
    targets, _ = select(m.graph, [m.cost])
    vals = ir.build(ancestors(targets))
    live = ir.live_vals([vals[n.id] for n in targets])
    return live, place(live, "cuda")


@pytest.mark.parametrize("name", STEPS)
def test_parameters_live_on_the_device_and_only_feeds_move_in(name):
    m, _ = step(name)
    live, where = _placement(m)
    assert isinstance(where, Placement) and where.grads == "cuda"
    params = {id(v) for v in live if v.kind == "param"}
    assert params and params <= set(where.leaves), "every parameter stays on the device"
    assert {v.nodes[0].name for v in where.feeds} == set(m.inputs), "feeds: the inputs, nothing else"
    assert all(where.device_of(v) == "cuda" for v in live if v.kind == "op")


def test_use_cuda_for_keeps_leaves_on_the_host():
    m, _ = step("mlp")
    targets, _ = select(m.graph, [m.cost])
    vals = ir.build(ancestors(targets))
    live = ir.live_vals([vals[n.id] for n in targets])
    where = place(live, None, ("relu",))
    assert where and not where.leaves and not where.feeds and where.grads is None
    assert {v.op for v in live if id(v) in where} == {"relu"} | ({"unary_grad"} & {v.op for v in live})
    with pytest.raises(BackendError, match="no CUDA kernels for"):
        place(live, None, ("matmul",))   # device="cuda" runs matmuls; use_cuda_for names kernels
    with pytest.raises(BackendError, match="unknown device"):
        place(live, "tpu")


def test_an_op_without_a_device_row_stays_on_the_host_with_transfers():
    g = ev.Graph()
    z = g.matrix("z", (4, 3), dtype=np.float32)
    t = g.tensor("t", (4,), np.int16)               # no int16 kernels: cross_entropy on the host
    cost = ev.sum(ev.tanh(ev.cross_entropy(z * 2.0, t)))
    prog = ev.TapeMachine.compile(g, [cost], device="cuda")
    assert prog.verify()
    by_op = {i.op: i.kernel for i in prog.instrs}
    assert by_op["cross_entropy"] != "cuda" and by_op["tanh"] == "cuda"
    assert any(i.op == "to_host" for i in prog.instrs) and any(i.op == "to_device" for i in prog.instrs)


@pytest.mark.parametrize("name", ["mlp", "rnn_b32", "char_rnn example"])
def test_compiled_step_has_no_transfer_between_first_and_last_instruction(name):
    if name == "char_rnn example":
        g, loss, outputs, n_in = char_model()
    else:
        m, _ = step(name)
        g, outputs, n_in = m.graph, [m.cost], len(m.inputs)
    prog = ev.TapeMachine.compile(g, outputs, device="cuda")
    ops = [i.op for i in prog.instrs]
    work = [k for k, op in enumerate(ops) if op not in TRANSFERS]
    inside = [ops[k] for k in range(work[0], work[-1] + 1) if ops[k] in TRANSFERS]
    assert not inside, f"transfers inside the step: {inside}"
    assert sum(op == "to_device" for op in ops) == n_in, "the feeds in"
    assert sum(op == "to_host" for op in ops) == len(outputs), "the loss (and carried state) out"
    for w, rid in prog.grads:
        assert prog.registers[rid].device == "cuda", "gradients stay with the device parameters"


# -- end to end on the host twin (and on a GPU where there is one) ----------------------------

@pytest.mark.parametrize("name", STEPS)
def test_device_step_matches_the_host(device, name):
    w, data = models.weights_and_data(name, small=True)
    results = {}
    for dev in (None, "cuda"):
        m, _ = step(name, w)
        with ev.TapeMachine(m.graph, [m.cost], device=dev) as tm:
            for _ in range(2):      # the second run reuses every bound buffer
                tm.run(m.feeds(data))
            results[dev] = (float(np.asarray(m.cost.value)), [np.array(p.grad) for p in m.params])
    (cost_h, grads_h), (cost_d, grads_d) = results[None], results["cuda"]
    assert cost_d == pytest.approx(cost_h, rel=1e-5)
    for gh, gd in zip(grads_h, grads_d):
        np.testing.assert_allclose(gd, gh, rtol=1e-4, atol=1e-6)


def test_device_memory_is_flat_over_runs_and_freed_by_close(device):
    m, data = step("lstm_b32")
    with ev.TapeMachine(m.graph, [m.cost], device="cuda") as warm:
        warm.run(m.feeds(data))     # cuBLAS makes its handle and workspace once, at first use
    cuda.synchronize()
    free0 = cuda.mem_info()[0]
    tm = ev.TapeMachine(m.graph, [m.cost], device="cuda")
    for _ in range(2):              # the second run captures the step as a CUDA graph
        tm.run(m.feeds(data))
    cuda.synchronize()
    after_capture = cuda.mem_info()[0]
    assert after_capture < free0
    for _ in range(100 if device == "twin" else 1000):
        tm.run(m.feeds(data))
    cuda.synchronize()
    assert cuda.mem_info()[0] == after_capture, "a run allocates nothing on the device"
    tm.close()
    cuda.synchronize()
    assert cuda.mem_info()[0] == free0, "close() frees every device buffer (cudaMemGetInfo)"
    with cuda.tidy():
        dead = cuda.to_device(np.ones(1 << 16, np.float32))
    assert dead.freed and cuda.mem_info()[0] == free0, "so does a tidy() scope"


def test_an_index_out_of_range_on_the_device_is_an_error(twin):
    m, data = step("rnn_b32")
    bad = dict(data, ids=data["ids"].copy())
    bad["ids"][0, 0] = 10_000
    with ev.TapeMachine(m.graph, [m.cost], device="cuda") as tm:
        with pytest.raises(IndexRangeError, match="out of range"):
            tm.run(m.feeds(bad))
        tm.run(m.feeds(data))       # the status word was cleared: the next good run is fine
        assert np.isfinite(float(np.asarray(m.cost.value)))


@pytest.mark.parametrize("script,args", [("mlp.py", ["--smoke", "--device", "twin"]),
                                         ("char_rnn.py", ["--smoke", "--device", "twin", "--sample", "0",
                                                          "--plot", "", "--svg", ""])])
def test_examples_train_through_the_device_path_on_the_twin(tmp_path, script, args):
    import subprocess
    root = pathlib.Path(__file__).resolve().parents[1]
    if __import__("exprvm.kernels.build_cuda", fromlist=["x"]).find_cxx() is None:
        pytest.skip("no C++ compiler for the host twin")
    proc = subprocess.run([sys.executable, str(root / "examples" / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if script == "mlp.py":
        acc = [float(ln.rsplit(" ", 1)[1]) for ln in proc.stdout.splitlines() if "test accuracy" in ln]
        assert acc and acc[-1] > 0.8, proc.stdout
    else:
        first, last = [float(x) for x in proc.stdout.split("loss first ")[1].split()[0:3:2]]
        assert last < first, proc.stdout
