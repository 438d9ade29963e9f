"""Learning-rate schedules (each against its formula in numpy), their use with every
solver, their place in state_dict and checkpoints, and the Barzilai-Borwein solver
against a numpy reference of its step."""
import math

import numpy as np
import pytest

import exprvm as ev
from exprvm.train.schedules import Constant, CosineDecay, ExponentialDecay, LinearWarmup, StepDecay

S = ev.schedules
T = np.arange(40)


class P:
    """A parameter as solvers see one: a name, a value and a gradient."""

    def __init__(self, name, value):
        self.name, self.value, self.grad = name, np.array(value, dtype=np.float64), None


def lrs(schedule, n=len(T)):
    return np.array([schedule(t) for t in range(n)])


# -- the schedules, each against its formula ----------------------------------------------------

def test_step_decay():
    np.testing.assert_allclose(lrs(S.StepDecay(0.5, 7, gamma=0.3)), 0.5 * 0.3 ** np.floor(T / 7), rtol=1e-15)


def test_exponential_decay():
    np.testing.assert_allclose(lrs(S.ExponentialDecay(0.2, 0.9)), 0.2 * np.exp(T * np.log(0.9)), rtol=1e-13)


def test_cosine_decay_reaches_its_floor_and_stays():
    got = lrs(S.CosineDecay(0.1, 25, min_lr=0.01))
    want = np.where(T < 25, 0.01 + 0.09 * 0.5 * (1 + np.cos(np.pi * np.minimum(T, 25) / 25)), 0.01)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert got[0] == 0.1 and got[-1] == 0.01 and np.all(np.diff(got) <= 0)


def test_linear_warmup_ramps_then_hands_over():
    after = S.CosineDecay(0.1, 20)
    got = lrs(S.LinearWarmup(after, 5))
    ramp = 0.1 * (T[:5] + 1) / 5
    tail = np.array([after(t - 5) for t in T[5:]])
    np.testing.assert_allclose(got, np.concatenate([ramp, tail]), rtol=1e-15)
    assert got[0] > 0 and got[4] == pytest.approx(0.1) and got[5] == 0.1
    np.testing.assert_allclose(lrs(S.LinearWarmup(0.3, 3), 5), [0.1, 0.2, 0.3, 0.3, 0.3])


@pytest.mark.parametrize("make, msg", [
    (lambda: S.StepDecay(0.1, 0), "step_size must be an int >= 1"),
    (lambda: S.StepDecay(0.1, 3, gamma=1.5), "gamma must lie in"),
    (lambda: S.ExponentialDecay(-1.0, 0.9), "lr must be a finite number > 0"),
    (lambda: S.CosineDecay(0.1, 10, min_lr=0.5), "min_lr must lie in"),
    (lambda: S.LinearWarmup(0.1, 2.5), "warmup_steps must be an int"),
    (lambda: ev.solvers.SGD(lr=lambda t: 0.1), "takes a number or an ev.schedules schedule"),
])
def test_bad_schedules_are_clear_errors(make, msg):
    with pytest.raises(ev.ExprError, match=msg):
        make()


# -- with every solver ---------------------------------------------------------------------------

SOLVERS = {
    "SGD": lambda lr: ev.solvers.SGD(lr=lr),
    "Momentum": lambda lr: ev.solvers.Momentum(lr=lr, nesterov=True),
    "AdaGrad": lambda lr: ev.solvers.AdaGrad(lr=lr),
    "RMSProp": lambda lr: ev.solvers.RMSProp(lr=lr),
    "Adam": lambda lr: ev.solvers.Adam(lr=lr),
    "AdamW": lambda lr: ev.solvers.AdamW(lr=lr, weight_decay=0.1),
    "BarzilaiBorwein": lambda lr: ev.solvers.BarzilaiBorwein(lr=lr),
}


def quadratic_grads(params):
    """Gradients of sum_k 0.5 * c_k * w_k^2 (an ill-conditioned bowl) onto the params."""
    for k, p in enumerate(params):
        p.grad = (1.0 + 4.0 * k) * p.value + 0.3


def fresh():
    return [P("a", [1.0, -2.0, 0.5]), P("b", [[0.2, 0.4], [-1.0, 3.0]])]


@pytest.mark.parametrize("kind", sorted(SOLVERS))
def test_a_schedule_drives_every_solver_like_setting_its_lr_by_hand(kind):
    sched = S.LinearWarmup(S.StepDecay(0.05, 4, gamma=0.5), 3)
    scheduled, manual = SOLVERS[kind](sched), SOLVERS[kind](0.05)
    pa, pb = fresh(), fresh()
    for t in range(12):
        quadratic_grads(pa)
        quadratic_grads(pb)
        scheduled.step(pa)
        assert scheduled.lr == sched(t)
        if kind == "BarzilaiBorwein":   # its schedule scales its own steps: tested below
            continue
        manual.lr = sched(t)
        manual.step(pb)
        for x, y in zip(pa, pb):
            np.testing.assert_array_equal(x.value, y.value)


def test_sgd_with_a_schedule_against_numpy():
    sched = S.CosineDecay(0.1, 10)
    (p,) = [P("w", [2.0, -1.0])]
    opt = ev.solvers.SGD(lr=sched)
    w = p.value.copy()
    for t in range(15):
        p.grad = 2 * p.value
        opt.step([p])
        w = w - sched(t) * 2 * w
        np.testing.assert_allclose(p.value, w, rtol=1e-15)


@pytest.mark.parametrize("kind", sorted(SOLVERS))
def test_schedule_state_resumes_through_a_checkpoint(kind, tmp_path):
    sched = S.LinearWarmup(S.ExponentialDecay(0.05, 0.8), 2)
    straight, params = SOLVERS[kind](sched), fresh()
    for _ in range(10):
        quadratic_grads(params)
        straight.step(params)

    first, resumed = SOLVERS[kind](sched), fresh()
    for _ in range(5):
        quadratic_grads(resumed)
        first.step(resumed)
    state = first.state_dict()
    assert state["lr"] == sched(4) and "ExponentialDecay" in str(state["schedule"])
    ev.save(tmp_path / "ckpt.npz", resumed, solver=state)
    ckpt = ev.load(tmp_path / "ckpt.npz", resumed)
    second = SOLVERS[kind](sched)
    second.load_state_dict(ckpt.section("solver"), resumed)
    for _ in range(5):
        quadratic_grads(resumed)
        second.step(resumed)
    assert second.lr == straight.lr == sched(9)
    for x, y in zip(params, resumed):
        np.testing.assert_allclose(x.value, y.value, rtol=1e-14)


def test_a_state_saved_with_another_schedule_is_refused():
    params = fresh()
    opt = ev.solvers.Adam(lr=S.CosineDecay(0.01, 100))
    quadratic_grads(params)
    opt.step(params)
    other = ev.solvers.Adam(lr=S.CosineDecay(0.01, 200))
    with pytest.raises(ev.CheckpointError, match="total_steps.*100.*follows.*200"):
        other.load_state_dict(opt.state_dict(), params)
    ev.solvers.Adam(lr=S.CosineDecay(0.01, 100)).load_state_dict(opt.state_dict(), params)
    ev.solvers.Adam(lr=0.01).load_state_dict(opt.state_dict(), params)   # a plain lr takes any


def test_describe_and_repr_name_the_numbers():
    s = S.LinearWarmup(S.CosineDecay(0.1, 50, min_lr=0.001), 10)
    assert s.describe() == {"kind": "LinearWarmup", "warmup_steps": 10,
                            "after": {"kind": "CosineDecay", "lr": 0.1, "total_steps": 50, "min_lr": 0.001}}
    assert repr(s) == "LinearWarmup(CosineDecay(lr=0.1, total_steps=50, min_lr=0.001), warmup_steps=10)"
    assert isinstance(Constant(0.1), S.Schedule) and StepDecay and ExponentialDecay and CosineDecay and LinearWarmup


# -- Barzilai-Borwein ------------------------------------------------------------------------------

def bb_reference(w0, grad, lr, steps, variant):
    """Barzilai-Borwein on one flat vector, written from its definition."""
    ws = [np.array(w0, dtype=np.float64)]
    w_prev = g_prev = None
    eta = lr
    w = ws[0].copy()
    for _ in range(steps):
        g = grad(w)
        if w_prev is not None:
            s, y = w - w_prev, g - g_prev
            cand = abs(s @ y) / (y @ y) if variant == "short" else (s @ s) / abs(s @ y)
            if math.isfinite(cand) and cand > 0:
                eta = cand
        w_prev, g_prev = w.copy(), g.copy()
        w = w - eta * g
        ws.append(w.copy())
    return ws


@pytest.mark.parametrize("variant", ["short", "long"])
def test_barzilai_borwein_matches_its_definition_over_all_parameters(variant):
    c = np.array([1.0, 5.0, 9.0, 13.0, 17.0])
    grad = lambda w: c * w + 0.3 - 0.1 * w ** 3   # noqa: E731  (not quadratic: the steps vary)
    w0 = np.array([0.5, -0.4, 0.3, 0.2, -0.1])
    ref = bb_reference(w0, grad, 0.02, 12, variant)
    a, b = P("a", w0[:2]), P("b", w0[2:].reshape(3, 1))     # one step size across both
    opt = ev.solvers.BarzilaiBorwein(lr=0.02, variant=variant)
    for k in range(12):
        flat = np.concatenate([a.value.ravel(), b.value.ravel()])
        g = grad(flat)
        a.grad, b.grad = g[:2], g[2:].reshape(3, 1)
        opt.step([a, b])
        np.testing.assert_allclose(np.concatenate([a.value.ravel(), b.value.ravel()]), ref[k + 1],
                                   rtol=1e-12, atol=1e-14)
    assert opt.eta != 0.02


def test_barzilai_borwein_beats_sgd_on_an_ill_conditioned_bowl():
    c = np.array([1.0, 10.0, 100.0])

    def solve(opt, steps=60):
        p = P("w", [1.0, 1.0, 1.0])
        for _ in range(steps):
            p.grad = c * p.value
            opt.step([p])
        return float(np.abs(p.value).max())

    assert solve(ev.solvers.BarzilaiBorwein(lr=0.009)) < 1e-6 < solve(ev.solvers.SGD(lr=0.009))


def test_barzilai_borwein_keeps_its_step_when_the_gradient_does_not_change():
    p = P("w", [1.0, 2.0])
    opt = ev.solvers.BarzilaiBorwein(lr=0.1)
    for _ in range(3):
        p.grad = np.array([1.0, 1.0])        # y = 0: no curvature to measure
        opt.step([p])
    assert opt.eta == 0.1
    np.testing.assert_allclose(p.value, [0.7, 1.7])


def test_barzilai_borwein_on_a_compiled_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.25
    g = ev.Graph()
    W = g.vector("W", 3, value=np.zeros(3))
    b = g.scalar("b", value=np.zeros(()))
    xs = g.matrix("X", X.shape)
    cost = ev.mean(ev.square(xs @ W + b - y))
    ev.grad(cost, [W, b])
    m = ev.TapeMachine(g, outputs=[cost])
    opt = ev.solvers.BarzilaiBorwein(lr=0.05)
    for _ in range(40):
        m.run({xs: X})
        opt.step([W, b])
    m.run({xs: X})
    assert float(cost.value) < 1e-12
    np.testing.assert_allclose(W.value, [1.5, -2.0, 0.5], atol=1e-6)


def test_barzilai_borwein_state_and_errors():
    params = fresh()
    opt = ev.solvers.BarzilaiBorwein(lr=0.01, variant="long")
    for _ in range(3):
        quadratic_grads(params)
        opt.step(params)
    d = opt.state_dict()
    assert d["eta"] == opt.eta and str(d["variant"]) == "long" and "a/prev_w" in d
    with pytest.raises(ev.CheckpointError, match="'long' variant"):
        ev.solvers.BarzilaiBorwein(lr=0.01).load_state_dict(d, params)
    with pytest.raises(ev.CheckpointError, match="step size"):
        ev.solvers.BarzilaiBorwein(lr=0.01, variant="long").load_state_dict({**d, "eta": np.array(-1.0)}, params)
    with pytest.raises(ev.ExprError, match="variant must be one of"):
        ev.solvers.BarzilaiBorwein(variant="medium")


def test_a_schedule_scales_the_barzilai_borwein_steps():
    sched = S.StepDecay(0.02, 3, gamma=0.5)
    c = np.array([1.0, 4.0, 9.0])
    p = P("w", [0.5, -0.5, 0.25])
    opt = ev.solvers.BarzilaiBorwein(lr=sched)
    w, w_prev, g_prev, eta = p.value.copy(), None, None, 0.02
    for t in range(9):
        g = c * w + 0.1 * w ** 3
        p.grad = c * p.value + 0.1 * p.value ** 3
        opt.step([p])
        if w_prev is not None:
            s, y = w - w_prev, g - g_prev
            eta = abs(s @ y) / (y @ y)
        w_prev, g_prev = w.copy(), g.copy()
        w = w - eta * sched(t) / sched(0) * g
        np.testing.assert_allclose(p.value, w, rtol=1e-12)
