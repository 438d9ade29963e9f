"""Optimizer hooks (ev.solvers.hooks, opt.add_hook) and the solvers AdaDelta,
RMSpropGraves and NAdam, each against a numpy reference of its published rule."""
import numpy as np
import pytest

import exprvm as ev
import exprvm.cuda as cuda
from exprvm.train import device as td

from cuda_twin import device, twin  # noqa: F401  (fixtures)

H = ev.solvers.hooks


class P:
    def __init__(self, name, value, grad=None):
        self.name, self.value, self.grad = name, value, grad


def params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [P("W", rng.standard_normal((4, 3)).astype(dtype)), P("b", rng.standard_normal(3).astype(dtype))]


def grads(ps, rng, scale=2.0):
    for p in ps:
        p.grad = (rng.standard_normal(p.value.shape) * scale).astype(p.value.dtype)


def recorder(opt):
    seen = []
    opt.add_hook(lambda solver, ps: seen.append({p.name: p.grad.copy() for p in ps}))
    return seen


# -- hooks --------------------------------------------------------------------------------

def test_each_hook_against_its_formula():
    rng = np.random.default_rng(1)
    ps = params()
    grads(ps, rng)
    w = {p.name: p.value.copy() for p in ps}
    g = {p.name: p.grad.copy() for p in ps}
    norm = np.sqrt(sum(np.sum(v * v) for v in g.values()))
    cases = [
        (H.WeightDecay(0.3), {k: g[k] + 0.3 * w[k] for k in g}),
        (H.Lasso(0.2), {k: g[k] + 0.2 * np.sign(w[k]) for k in g}),
        (H.GradientHardClipping(-0.5, 1.0), {k: np.clip(g[k], -0.5, 1.0) for k in g}),
        (H.GradientClipping(1.5), {k: g[k] * 1.5 / norm for k in g}),
        (H.GradientClipping(norm * 0.75), {k: g[k] * 0.75 for k in g}),
        (H.GradientClipping(norm * 2), g),                      # under the threshold: untouched
    ]
    for hook, want in cases:
        opt = ev.solvers.SGD(lr=0.1)
        opt.add_hook(hook)
        seen = recorder(opt)
        opt.step(ps)
        for k in want:
            np.testing.assert_allclose(seen[0][k], want[k], rtol=1e-13, err_msg=repr(hook))
            np.testing.assert_array_equal(ps[0 if k == "W" else 1].grad, g[k])    # .grad is left alone
        for p in ps:                                            # put the values back
            np.copyto(p.value, w[p.name])
    assert norm > 1.5, "the clipping case clipped"


def test_hooks_run_in_the_order_added():
    ps = params()
    grads(ps, np.random.default_rng(2))
    w = {p.name: p.value.copy() for p in ps}
    g = {p.name: p.grad.copy() for p in ps}
    outs = []
    for order in [(H.WeightDecay(0.5), H.GradientHardClipping(-0.1, 0.1)),
                  (H.GradientHardClipping(-0.1, 0.1), H.WeightDecay(0.5))]:
        opt = ev.solvers.SGD(lr=0.1)
        for h in order:
            opt.add_hook(h)
        seen = recorder(opt)
        opt.step(ps)
        outs.append(seen[0])
        for p in ps:
            np.copyto(p.value, w[p.name])
    np.testing.assert_allclose(outs[0]["W"], np.clip(g["W"] + 0.5 * w["W"], -0.1, 0.1))
    np.testing.assert_allclose(outs[1]["W"], np.clip(g["W"], -0.1, 0.1) + 0.5 * w["W"])


@pytest.mark.parametrize("make", [ev.solvers.SGD, ev.solvers.Adam, ev.solvers.Momentum])
def test_arguments_are_these_hooks_with_the_same_numbers(make):
    kw = dict(clip=0.8, clip_norm=1.2, l1=1e-3, l2=1e-2)
    a, b = make(lr=0.05, **kw), make(lr=0.05)
    for h in (H.GradientHardClipping(-0.8, 0.8), H.GradientClipping(1.2), H.Lasso(1e-3), H.WeightDecay(1e-2)):
        b.add_hook(h)
    assert [repr(h) for h in a.hooks] == [repr(h) for h in b.hooks]
    pa, pb = params(np.float32), params(np.float32)
    rng = np.random.default_rng(3)
    for _ in range(5):
        grads(pa, rng)
        for x, y in zip(pa, pb):
            y.grad = x.grad.copy()
        a.step(pa)
        b.step(pb)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x.value, y.value)


def test_gradient_noise_follows_its_schedule_and_seed():
    ps = [P("w", np.zeros(5)), P("v", np.zeros(2))]
    opt = ev.solvers.SGD(lr=1.0)
    opt.add_hook(H.GradientNoise(0.3, seed=7))
    seen = recorder(opt)
    ref = np.random.default_rng(7)
    for t in range(3):
        for p in ps:
            p.grad = np.zeros_like(p.value)
        opt.step(ps)
        std = np.sqrt(0.3 / (1 + t) ** 0.55)
        for p in ps:
            np.testing.assert_allclose(seen[t][p.name], ref.standard_normal(p.value.shape) * std, rtol=1e-14)


def test_bad_hooks_are_typed_errors():
    with pytest.raises(ev.ExprError, match="callable"):
        ev.solvers.SGD().add_hook(3)
    with pytest.raises(ev.ExprError, match="above upper"):
        H.GradientHardClipping(1.0, -1.0)
    with pytest.raises(ev.ExprError):
        H.WeightDecay(-1.0)
    with pytest.raises(ev.ExprError):
        H.GradientClipping(0.0)
    with pytest.raises(ev.ExprError):
        H.GradientHardClipping("a", 1.0)


def test_a_hook_may_assign_a_new_gradient():
    ps = params()
    grads(ps, np.random.default_rng(4))
    g0 = ps[0].grad.copy()

    def double(solver, prms):
        for p in prms:
            p.grad = p.grad * 2            # a new array: copied into the prepared gradient

    opt = ev.solvers.SGD(lr=0.1)
    opt.add_hook(double)
    seen = recorder(opt)
    opt.step(ps)
    np.testing.assert_array_equal(seen[0]["W"], 2 * g0)


# -- hooks on device parameters ----------------------------------------------------------

def test_device_hooks_that_fit_the_fused_kernel_match_the_host(device):
    host, dev = params(np.float32), params(np.float32)
    for p in dev:
        p.value = cuda.to_device(p.value)
    opts = []
    for _ in range(2):
        opt = ev.solvers.Adam(lr=1e-2)
        for h in (H.GradientHardClipping(-1.0, 1.0), H.GradientClipping(2.0), H.WeightDecay(0.1), H.Lasso(0.01)):
            opt.add_hook(h)
        opts.append(opt)
    rng = np.random.default_rng(5)
    for _ in range(3):
        grads(host, rng)
        for h, d in zip(host, dev):
            d.grad = cuda.to_device(h.grad)
        opts[0].step(host)
        opts[1].step(dev)
    for h, d in zip(host, dev):
        np.testing.assert_allclose(d.value.numpy(), h.value, rtol=2e-5, atol=2e-6)
    td.free_state(opts[1])


def test_device_refuses_hooks_the_kernel_cannot_run(twin):
    p = P("w", cuda.to_device(np.ones(3, np.float32)), cuda.to_device(np.ones(3, np.float32)))
    for hooks in ([H.GradientNoise(0.1, seed=0)], [H.WeightDecay(0.1), H.GradientClipping(1.0)],
                  [H.GradientHardClipping(-1.0, 2.0)], [H.WeightDecay(0.1), H.WeightDecay(0.2)]):
        opt = ev.solvers.SGD(lr=0.1)
        for h in hooks:
            opt.add_hook(h)
        with pytest.raises(ev.BackendError, match="cannot run the hook"):
            opt.step([p])
    np.testing.assert_array_equal(p.value.numpy(), np.ones(3))    # nothing moved


# -- the new solvers against their published rules ------------------------------------------

def ref_adadelta(w, gs, rho=0.95, eps=1e-6):
    msg, msdx = np.zeros_like(w), np.zeros_like(w)
    for g in gs:
        msg = rho * msg + (1 - rho) * g * g
        dx = np.sqrt((msdx + eps) / (msg + eps)) * g
        msdx = rho * msdx + (1 - rho) * dx * dx
        w = w - dx
    return w


def ref_rmsprop_graves(w, gs, lr=1e-4, alpha=0.95, momentum=0.9, eps=1e-4):
    ms, mg, delta = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for g in gs:
        ms = alpha * ms + (1 - alpha) * g * g
        mg = alpha * mg + (1 - alpha) * g
        delta = momentum * delta - lr * g / np.sqrt(ms - mg * mg + eps)
        w = w + delta
    return w


def ref_nadam(w, gs, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, psi=4e-3):
    m, v, prod = np.zeros_like(w), np.zeros_like(w), 1.0
    for t, g in enumerate(gs, start=1):
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu1 = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        d = np.sqrt(v / (1 - b2 ** t)) + eps
        w = w - lr * (1 - mu) / (1 - prod) * g / d - lr * mu1 / (1 - prod * mu1) * m / d
    return w


NEW = [("AdaDelta", lambda **k: ev.solvers.AdaDelta(**k), {}, ref_adadelta),
       ("AdaDelta rho", lambda **k: ev.solvers.AdaDelta(**k), {"rho": 0.8, "eps": 1e-3}, ref_adadelta),
       ("RMSpropGraves", lambda **k: ev.solvers.RMSpropGraves(**k), {}, ref_rmsprop_graves),
       ("RMSpropGraves lr", lambda **k: ev.solvers.RMSpropGraves(**k),
        {"lr": 1e-2, "alpha": 0.9, "momentum": 0.5, "eps": 1e-3}, ref_rmsprop_graves),
       ("NAdam", lambda **k: ev.solvers.NAdam(**k), {}, ref_nadam)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("label,make,kw,ref", NEW, ids=[n[0] for n in NEW])
def test_new_solvers_follow_their_published_rule(label, make, kw, ref, dtype):
    rng = np.random.default_rng(6)
    w0 = rng.standard_normal((5, 4))
    gs = [rng.standard_normal((5, 4)) for _ in range(8)]
    p = P("w", w0.astype(dtype))
    opt = make(**kw)
    for g in gs:
        p.grad = g.astype(dtype)
        assert opt.step([p])
    want = ref(w0, [g.astype(dtype).astype(np.float64) for g in gs], **{
        {"lr": "lr", "rho": "rho", "eps": "eps", "alpha": "alpha", "momentum": "momentum"}[k]: v
        for k, v in kw.items()})
    assert not np.allclose(want, w0, rtol=0, atol=1e-6), "the steps moved the parameter"
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(p.value, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("label,make,kw,ref", NEW[::2], ids=[n[0] for n in NEW[::2]])
def test_new_solvers_resume_from_state_dict(label, make, kw, ref):
    rng = np.random.default_rng(8)
    w0 = rng.standard_normal(6)
    gs = [rng.standard_normal(6) for _ in range(6)]
    a, b = P("w", w0.copy()), P("w", w0.copy())
    opt_a, opt_b = make(**kw), make(**kw)
    for g in gs[:3]:
        a.grad = b.grad = g
        opt_a.step([a])
        opt_b.step([b])
    opt_c = make(**kw)
    opt_c.load_state_dict(opt_b.state_dict(), [b])
    for g in gs[3:]:
        a.grad = b.grad = g
        opt_a.step([a])
        opt_c.step([b])
    np.testing.assert_array_equal(a.value, b.value)


def test_nadam_matches_torch_where_installed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    w0 = rng.standard_normal(7)
    gs = [rng.standard_normal(7) for _ in range(10)]
    tw = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.NAdam([tw])
    p, opt = P("w", w0.copy()), ev.solvers.NAdam()
    for g in gs:
        tw.grad = torch.tensor(g)
        topt.step()
        p.grad = g
        opt.step([p])
    np.testing.assert_allclose(p.value, tw.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_new_solvers_arguments_and_device():
    with pytest.raises(ev.ExprError, match="no learning rate"):
        ev.solvers.AdaDelta(lr=0.1)
    with pytest.raises(ev.ExprError):
        ev.solvers.RMSpropGraves(alpha=1.0)
    with pytest.raises(ev.ExprError):
        ev.solvers.NAdam(momentum_decay=-1)
    assert ev.solvers.NAdam().lr == 2e-3 and ev.solvers.RMSpropGraves().eps == 1e-4


def test_new_solvers_have_no_device_update(twin):
    p = P("w", cuda.to_device(np.ones(3, np.float32)), cuda.to_device(np.ones(3, np.float32)))
    for make in (ev.solvers.AdaDelta, ev.solvers.RMSpropGraves, ev.solvers.NAdam):
        with pytest.raises(ev.BackendError, match="no device update"):
            make().step([p])


def test_a_hooks_state_travels_in_the_solvers_state_dict():
    """GradientNoise's random stream is saved with the solver: a resumed solver adds the
    noise the uninterrupted one would have added."""
    def run(opt, ps, steps, seed):
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            grads(ps, rng)
            opt.step(ps)

    def solver(seed):
        opt = ev.solvers.Adam(lr=0.1, clip_norm=3.0)
        opt.add_hook(H.GradientNoise(0.5, seed=seed))
        return opt
    ps, opt = params(), solver(1)
    run(opt, ps, 3, seed=10)
    state, mid = opt.state_dict(), [p.value.copy() for p in ps]
    assert sorted(k for k in state if k.startswith("hook")) == ["hook1:GradientNoise/rng"]
    run(opt, ps, 2, seed=11)
    again, opt2 = params(), solver(12345)                 # another seed: the state must win
    for p, v in zip(again, mid):
        np.copyto(p.value, v)
    opt2.load_state_dict(state, again)
    run(opt2, again, 2, seed=11)
    for p, q in zip(ps, again):
        np.testing.assert_array_equal(p.value, q.value)
    other = ev.solvers.Adam(lr=0.1, clip_norm=3.0)
    other.add_hook(H.WeightDecay(0.1))
    other.add_hook(H.GradientNoise(0.5))
    with pytest.raises(ev.CheckpointError, match="nothing for hook 2, GradientNoise"):
        other.load_state_dict(state, again)
    bad = dict(state)
    bad["hook1:GradientNoise/rng"] = np.array('{"bit_generator": "MT19937"}')
    with pytest.raises(ev.CheckpointError, match="the saved stream is a MT19937, this one a PCG64"):
        solver(0).load_state_dict(bad, again)
