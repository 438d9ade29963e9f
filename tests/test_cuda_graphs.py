"""A TapeMachine's device instructions replayed as one CUDA graph (machines/cuda_graph.py,
device/graphs.py) against the same machine launching them one by one: on the host twin,
whose capture records every launch with the arguments it had (as a CUDA graph does) and
fails the calls a capture cannot hold, and, marked `cuda`, on a GPU."""
import contextlib
import gc
import sys
import pathlib
import threading
import warnings

import numpy as np
import pytest

import exprvm as ev
from exprvm.device import cublas, graphs, loader
from exprvm.errors import KernelError, UsageError

from cuda_twin import device, twin  # noqa: F401  (fixtures)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import models  # noqa: E402


def step(name):
    w, data = models.weights_and_data(name, small=True)
    return models.graph(name, {k: v.copy() for k, v in w.items()}, small=True), data


def batches(data, n):
    """n different batches shaped like data (new floats, new ids)."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        out.append({k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f"
                        else rng.integers(0, int(v.max()) + 1, v.shape).astype(v.dtype))
                    for k, v in data.items()})
    return out


@pytest.fixture
def captures(monkeypatch):
    """The number of CUDA graphs captured so far (a list, so that it reads live)."""
    made = []
    real = graphs.capture

    def counted(steps):
        made.append(len(steps))
        return real(steps)
    monkeypatch.setattr(graphs, "capture", counted)
    return made


def train(name, cuda_graph, runs=3):
    """Costs and final parameters of `runs` SGD steps on the device, each on a new batch."""
    m, data = step(name)
    opt = ev.solvers.SGD(lr=0.05)
    costs = []
    with ev.TapeMachine(m.graph, [m.cost], device="cuda", cuda_graph=cuda_graph) as tm, \
            warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)      # a capture that fails fails here
        span = tm.cuda_graph
        for batch in batches(data, runs):
            tm.run(m.feeds(batch))
            costs.append(float(np.asarray(m.cost.value)))
            opt.step(m.params)
        tm.params_to_host()
        params = [np.array(p.value) for p in m.params]
    return costs, params, span


@pytest.mark.parametrize("name", ["mlp", "rnn_b1", "lstm_b32"])
def test_a_replayed_training_step_equals_the_launch_by_launch_one(device, captures, name):
    costs_l, params_l, span_l = train(name, cuda_graph=False)
    assert span_l is None and not captures
    costs_g, params_g, span_g = train(name, cuda_graph=None)
    assert captures == [span_g[1] - span_g[0] + 1], "captured once (at the second run) and replayed"
    assert len(set(costs_g)) == len(costs_g), "each run read its own batch"
    np.testing.assert_allclose(costs_g, costs_l, rtol=1e-5)
    for a, b in zip(params_g, params_l):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_graph_spans_the_device_instructions_between_the_transfers(twin):
    m, data = step("lstm_b32")
    with ev.TapeMachine(m.graph, [m.cost], device="cuda") as tm:
        first, last = tm.cuda_graph
        ops = [ins.op for ins in tm.program.instrs]
        assert set(ops[:first]) == {"to_device"} and set(ops[last + 1:]) == {"to_host"}
        assert not {"to_device", "to_host"} & set(ops[first:last + 1])


@contextlib.contextmanager
def beside_plain():
    """(m, tm, ref, plain, batch): the MLP step on a machine replaying a CUDA graph and the
    same step on one launching one by one, and a batch."""
    m, data = step("mlp")
    ref, _ = step("mlp")
    with ev.TapeMachine(m.graph, [m.cost], device="cuda") as tm, \
            ev.TapeMachine(ref.graph, [ref.cost], device="cuda", cuda_graph=False) as plain:
        yield m, tm, ref, plain, batches(data, 1)[0]


def test_a_rebound_parameter_is_captured_again(twin, captures):
    with beside_plain() as (m, tm, ref, plain, batch):
        for _ in range(3):          # launched, captured, replayed
            tm.run(m.feeds(batch))
        for p, q in zip(m.params, ref.params):      # a new array: rebound, its pointer moves
            p.value = q.value = np.full(p.shape, 0.01, p.dtype)
        for _ in range(3):
            tm.run(m.feeds(batch))
        plain.run(ref.feeds(batch))
        assert len(captures) == 2
        assert float(np.asarray(m.cost.value)) == float(np.asarray(ref.cost.value))


def _blocking_first_step(tm, call):
    """Make the first instruction of tm's graph also make `call` (a call no capture holds)
    before its launch."""
    k = tm.cuda_graph[0]
    fn, args = tm._steps[k]

    def both(*a):
        call()
        fn(*a)
    tm._steps[k] = (both, args)


def _synchronize_raising():
    ev.cuda.synchronize()


def _synchronize_ignoring_its_error():
    loader.load()[1].ev_cuda_synchronize()     # (the capture is invalidated all the same)


@pytest.mark.parametrize("call", [_synchronize_raising, _synchronize_ignoring_its_error])
def test_launches_a_capture_cannot_hold_run_one_by_one_with_a_warning(twin, call):
    with beside_plain() as (m, tm, ref, plain, batch):
        _blocking_first_step(tm, call)
        tm.run(m.feeds(batch))      # (the first run launches one by one anyway)
        with pytest.warns(RuntimeWarning, match="one launch at a time.*capture"):
            tm.run(m.feeds(batch))
        plain.run(ref.feeds(batch))
        assert float(np.asarray(m.cost.value)) == float(np.asarray(ref.cost.value))
        with warnings.catch_warnings():
            warnings.simplefilter("error")      # said once
            tm.run(m.feeds(batch))


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self, payload):
        self.payload, self.me = payload, self


def test_the_collector_frees_no_device_memory_inside_a_capture(twin):
    """A DeviceArray that became cyclic garbage is not freed (cudaFree) inside a capture,
    which would fail it: the collector waits until the capture ends."""
    with beside_plain() as (m, tm, ref, plain, batch):
        tm.run(m.feeds(batch))
        pending = [ev.cuda.to_device(np.ones(4, np.float32))]
        _blocking_first_step(tm, lambda: _Cycle(pending.pop()) if pending else None)
        before = ev.cuda.mem_info()[0]
        threshold = gc.get_threshold()
        gc.set_threshold(1)         # a collection at every allocation
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                tm.run(m.feeds(batch))
        finally:
            gc.set_threshold(*threshold)
        assert tm.cuda_graph is not None and not pending
        gc.collect()
        assert ev.cuda.mem_info()[0] > before, "freed once the capture was over"


@pytest.mark.parametrize("call", [_synchronize_raising, _synchronize_ignoring_its_error])
def test_asked_for_a_graph_that_cannot_be_captured_is_an_error(twin, call):
    m, data = step("mlp")
    with ev.TapeMachine(m.graph, [m.cost], device="cuda", cuda_graph=True) as tm:
        _blocking_first_step(tm, call)
        tm.run(m.feeds(data))
        with pytest.raises(KernelError, match=r"CUDA graph of instructions \d+-\d+.*captur"):
            tm.run(m.feeds(data))
        ev.cuda.synchronize()       # no capture was left open


def test_products_follow_the_capture_to_its_stream(twin, monkeypatch):
    """cuBLAS must be sent to the capturing stream: the twin fails a product left on the
    default stream during a capture, as a GPU does."""
    a = ev.cuda.to_device(np.ones((3, 4), np.float32))
    b = ev.cuda.to_device(np.ones((4, 2), np.float32))
    out = ev.cuda.to_device(np.zeros((3, 2), np.float32))
    product = [cublas.bind_matmul(a, b, out)]
    graph = graphs.capture(product)
    assert not out.numpy().any(), "captured, not run"
    graph.launch()
    np.testing.assert_array_equal(out.numpy(), np.full((3, 2), 4.0, np.float32))
    graph.free()
    monkeypatch.setattr(cublas, "follow", lambda stream: None)
    with pytest.raises(KernelError, match="cannot capture.*cuBLAS"):
        graphs.capture(product)


def test_another_threads_product_stays_out_of_a_capture(device):
    """One cuBLAS handle serves every thread, and its stream is the capture's while a
    capture lasts: a product another thread runs meanwhile must wait and then run, not be
    recorded into the graph (its own output never written, the graph writing it at every
    replay). The twin records such a product into the capture, as a GPU does."""
    a = ev.cuda.to_device(np.ones((3, 4), np.float32))
    b = ev.cuda.to_device(np.ones((4, 2), np.float32))
    out = ev.cuda.to_device(np.zeros((3, 2), np.float32))
    x = ev.cuda.to_device(np.full((2, 2), 3.0, np.float32))
    y = ev.cuda.to_device(np.zeros((2, 2), np.float32))
    theirs = cublas.bind_matmul(x, x, y)
    ran, others = threading.Event(), []

    def other():
        theirs[0](*theirs[1])
        ran.set()

    def meanwhile():        # a step of the capture: the other thread starts its product
        others.append(threading.Thread(target=other))
        others[0].start()
        ran.wait(0.5)       # NOTE: it may finish only once the capture is over

    graph = graphs.capture([cublas.bind_matmul(a, b, out), (meanwhile, ())])
    others[0].join(60)
    np.testing.assert_array_equal(y.numpy(), np.full((2, 2), 18.0, np.float32))
    y.set(np.zeros((2, 2), np.float32))
    graph.launch()
    np.testing.assert_array_equal(out.numpy(), np.full((3, 2), 4.0, np.float32))
    assert not y.numpy().any(), "the other thread's product is no part of the graph"
    graph.free()


def test_other_threads_use_the_device_while_one_captures(device):
    """A capture holds up no other thread's copies and launches on the default stream: the
    capture's stream is a non-blocking one (while a blocking stream captures, the legacy
    default stream is unusable and their calls would fail)."""
    a = ev.cuda.to_device(np.ones((3, 4), np.float32))
    out = ev.cuda.to_device(np.zeros((3, 3), np.float32))
    got, errors, done = [], [], threading.Event()

    def other():
        try:
            got.append(ev.cuda.to_device(np.arange(6.0, dtype=np.float32)).numpy())
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)
        done.set()

    def meanwhile():        # a step of the capture: the other thread copies there and back
        worker = threading.Thread(target=other)
        worker.start()
        assert done.wait(60), "the other thread finished while the capture lasted"
        worker.join()

    graph = graphs.capture([(meanwhile, ()), cublas.bind_matmul(a, a.T, out)])
    assert not errors, errors
    np.testing.assert_array_equal(got[0], np.arange(6.0, dtype=np.float32))
    graph.launch()
    np.testing.assert_array_equal(out.numpy(), np.full((3, 3), 4.0, np.float32))
    graph.free()


def test_products_keep_their_own_workspace_across_streams(twin, monkeypatch):
    """Setting cuBLAS's stream puts it back on its own workspace pool, which a captured
    product would allocate from: follow() gives it exprvm's again (the twin fails a
    captured product without one)."""
    a = ev.cuda.to_device(np.ones((2, 2), np.float32))
    product = [cublas.bind_matmul(a, a, ev.cuda.to_device(np.zeros((2, 2), np.float32)))]
    graphs.capture(product).free()
    monkeypatch.setattr(cublas, "_set_workspace", lambda state: None)
    with pytest.raises(KernelError, match="cannot capture.*cuBLAS"):
        graphs.capture(product)


def test_when_a_program_gets_a_graph(twin):
    m, data = step("mlp")
    mixed = ev.TapeMachine(m.graph, [m.cost], use_cuda_for=("relu", "unary_grad"))
    assert mixed.cuda_graph is None, "host instructions between the device ones"
    with pytest.raises(UsageError, match="runs on the host between the device instructions"):
        ev.TapeMachine(m.graph, [m.cost], use_cuda_for=("relu", "unary_grad"), cuda_graph=True)
    with pytest.raises(UsageError, match="nothing on a CUDA device"):
        ev.TapeMachine(m.graph, [m.cost], cuda_graph=True)
    with pytest.raises(UsageError, match="must be None, True or False"):
        ev.TapeMachine(m.graph, [m.cost], device="cuda", cuda_graph="yes")
    watched = ev.TapeMachine(m.graph, [m.cost], device="cuda", nan_watch=True)
    assert watched.cuda_graph is None
    with pytest.raises(UsageError, match="look at every instruction"):
        ev.TapeMachine(m.graph, [m.cost], device="cuda", nan_watch=True, cuda_graph=True)
    for tm in (mixed, watched):
        tm.close()


def test_a_profile_times_the_launches_one_by_one(twin):
    m, data = step("mlp")
    with ev.TapeMachine(m.graph, [m.cost], device="cuda") as tm:
        prof = tm.profile(m.feeds(data), runs=2)
        first, last = tm.cuda_graph
        timed = {r.index for r in prof.rows if r.median_s > 0}
        assert set(range(first, last + 1)) <= timed
