"""Solver updates on device parameters (exprvm.train.device) against the host solvers,
on the host twin and, marked `cuda`, on a GPU; and device-resident parameters."""
import sys
import pathlib

import numpy as np
import pytest

import exprvm as ev
import exprvm.cuda as cuda
from exprvm.errors import BackendError, DTypeError, NumericError
from exprvm.device import launch as dk
from exprvm.train import device as td

from cuda_twin import device, twin  # noqa: F401  (fixtures)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import models  # noqa: E402


class P:
    """What a solver needs of a parameter: .name, .value, .grad."""

    def __init__(self, name, value, grad=None):
        self.name, self.value, self.grad = name, value, grad


SOLVERS = [
    ("SGD", lambda: ev.solvers.SGD(lr=0.1)),
    ("SGD l1 l2 clip", lambda: ev.solvers.SGD(lr=0.05, l1=1e-3, l2=1e-2, clip=0.5)),
    ("Momentum", lambda: ev.solvers.Momentum(lr=0.05, momentum=0.9)),
    ("Nesterov clip_norm", lambda: ev.solvers.Momentum(lr=0.05, nesterov=True, clip_norm=1.0)),
    ("Adam", lambda: ev.solvers.Adam(lr=1e-2)),
    ("Adam clip_norm l2", lambda: ev.solvers.Adam(lr=1e-2, clip_norm=0.3, l2=1e-3)),
    ("AdamW", lambda: ev.solvers.AdamW(lr=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label,make", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_device_updates_match_the_host_solver(device, label, make, dtype):
    rng = np.random.default_rng(0)
    shapes = {"W": (6, 5), "b": (5,), "s": ()}
    host = {k: P(k, rng.standard_normal(s).astype(dtype)) for k, s in shapes.items()}
    dev = {k: P(k, cuda.to_device(p.value)) for k, p in host.items()}
    opt_h, opt_d = make(), make()
    for _ in range(4):
        for k in shapes:
            g = (rng.standard_normal(shapes[k]) * 2).astype(dtype)
            host[k].grad, dev[k].grad = g, cuda.to_device(g)
        assert opt_h.step(list(host.values())) and opt_d.step(list(dev.values()))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for k in shapes:
        np.testing.assert_allclose(dev[k].value.numpy(), host[k].value, rtol=tol, atol=tol)
    state_h, state_d = opt_h.state_dict(), opt_d.state_dict()
    assert state_h.keys() == state_d.keys()
    for key in state_h:
        assert type(state_d[key]) is np.ndarray, "state_dict copies device state to the host"
        np.testing.assert_allclose(state_d[key].astype(float), state_h[key].astype(float), rtol=1e-4, atol=1e-6) \
            if state_h[key].dtype.kind == "f" else np.testing.assert_array_equal(state_d[key], state_h[key])
    td.free_state(opt_d)


def test_resident_host_arrays_are_updated_on_the_device(twin):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = ev.Graph()
    node = g.matrix("w", (2, 3), dtype=np.float32, value=w)
    params = td.DeviceParams()
    d = params.bind(node)
    assert td.resident(w) is d and params.bind(node) is d, "uploaded once"
    p = P("w", w, cuda.to_device(np.ones((2, 3), np.float32)))    # host .value, device .grad
    ev.solvers.SGD(lr=0.5).step([p])
    np.testing.assert_array_equal(w, np.arange(6).reshape(2, 3)), "the host array is a snapshot"
    np.testing.assert_allclose(d.numpy(), np.arange(6).reshape(2, 3) - 0.5)
    np.testing.assert_allclose(td.fresh(w), d.numpy())          # what ev.save writes
    params.to_host()
    np.testing.assert_allclose(w, np.arange(6).reshape(2, 3) - 0.5)
    free = cuda.mem_info()[0]
    params.close()
    assert td.resident(w) is None and cuda.mem_info()[0] > free and d.freed


def test_checkpoint_saves_the_device_values(twin, tmp_path):
    w = np.zeros(4, np.float32)
    g = ev.Graph()
    node = g.vector("w", 4, dtype=np.float32, value=w)
    params = td.DeviceParams()
    params.bind(node).set(np.full(4, 7.0, np.float32))
    ev.save(tmp_path / "ck.npz", {"w": w})
    np.testing.assert_array_equal(ev.load(tmp_path / "ck.npz")["w"], np.full(4, 7.0))
    params.close()


def test_nonfinite_gradients_on_the_device(twin):
    p = P("w", cuda.to_device(np.ones(3, np.float32)), cuda.to_device(np.array([1, np.nan, 0], np.float32)))
    opt = ev.solvers.SGD(lr=0.1)
    opt.step([p])                       # no sync: reported by the next check of the status word
    with pytest.raises(NumericError, match="NaN or Inf gradient"):
        dk.check_status()
    p.value.set(np.ones(3, np.float32))
    skip = ev.solvers.Adam(lr=0.1, nonfinite="skip")
    assert skip.step([p]) is False and skip.skipped == 1
    np.testing.assert_array_equal(p.value.numpy(), np.ones(3)), "a skipped step moves nothing"
    dk.check_status()


def test_device_step_refusals(twin):
    p = P("w", cuda.to_device(np.ones(3, np.float32)), cuda.to_device(np.ones(3, np.float32)))
    with pytest.raises(BackendError, match="no device update"):
        ev.solvers.AdaGrad(lr=0.1).step([p])
    q = P("v", np.ones(3, np.float32), cuda.to_device(np.ones(3, np.float32)))
    with pytest.raises(DTypeError, match="on the host"):
        ev.solvers.SGD(lr=0.1).step([q])
    r = P("u", cuda.to_device(np.ones(3, np.float32)), np.ones(3, np.float32))
    with pytest.raises(DTypeError, match="gradient on the device"):
        ev.solvers.SGD(lr=0.1).step([r])
    with pytest.raises(ev.GradError):
        ev.solvers.SGD(lr=0.1).step([P("z", cuda.to_device(np.ones(2, np.float32)))])


@pytest.mark.parametrize("name", ["mlp", "lstm_b32"])
def test_training_on_the_device_follows_the_host(device, name):
    """A few Adam steps of a whole model: the device run (its solver where the gradients
    are) tracks the host run."""
    w, data = models.weights_and_data(name, small=True)
    losses = {}
    for dev in (None, "cuda"):
        m = models.graph(name, {k: v.copy() for k, v in w.items()}, small=True)
        opt = ev.solvers.Adam(lr=1e-2, clip_norm=5.0)
        with ev.TapeMachine(m.graph, [m.cost], device=dev) as tm:
            seen = []
            for _ in range(5):
                tm.run(m.feeds(data))
                seen.append(float(np.asarray(m.cost.value)))
                opt.step(m.params)
        losses[dev] = seen
        td.free_state(opt)
    assert losses["cuda"][-1] < losses["cuda"][0]
    np.testing.assert_allclose(losses["cuda"], losses[None], rtol=1e-4)
