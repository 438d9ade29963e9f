"""ev.function, ev.value_and_grad and ev.grad(fn): traced once per signature, cached,
run on a TapeMachine, against numpy and finite differences."""
import numpy as np
import pytest

import exprvm as ev

F32 = np.float32


def test_traced_once_per_signature_and_cached():
    calls = []

    @ev.function
    def f(x, y):
        calls.append(1)
        return ev.sum(ev.tanh(x) * y, axis=0)

    a, b = np.ones((4, 3)), np.full((4, 3), 2.0)
    for _ in range(3):
        np.testing.assert_allclose(f(a, b), (np.tanh(a) * b).sum(0))
    assert f.trace_count == 1 and len(calls) == 1
    f(a.astype(F32), b.astype(F32))                 # a new dtype
    f(a[:2], b[:2])                                 # a new shape
    assert f.trace_count == 3 and len(f.programs) == 3
    assert "(float32[4, 3], float32[4, 3])" in f.programs
    prog = f.program_for(a, b)
    assert f.trace_count == 3 and "tanh" in str(prog)
    assert f.__name__ == "f"


def test_static_arguments_are_part_of_the_key():
    @ev.function
    def scale(x, k, mode="mul"):
        return x * k if mode == "mul" else x + k

    x = np.arange(3.0)
    np.testing.assert_allclose(scale(x, 2.0), x * 2)
    np.testing.assert_allclose(scale(x, 3.0), x * 3)
    np.testing.assert_allclose(scale(x, 3.0, mode="add"), x + 3)
    np.testing.assert_allclose(scale(x, 3), x * 3)        # an int is another static value
    assert scale.trace_count == 4
    np.testing.assert_allclose(scale(x, np.float64(5.0)), x * 5)   # a numpy scalar: an input
    np.testing.assert_allclose(scale(x, np.float64(6.0)), x * 6)
    assert scale.trace_count == 5


def test_trees_in_and_out():
    @ev.function
    def f(params, batch):
        h = ev.tanh(batch["x"] @ params[0] + params[1])
        return {"out": h, "both": (ev.sum(h), 7)}

    rng = np.random.default_rng(0)
    W, b, x = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((5, 3))
    got = f([W, b], {"x": x})
    want = np.tanh(x @ W + b)
    np.testing.assert_allclose(got["out"], want)
    np.testing.assert_allclose(got["both"][0], want.sum())
    assert got["both"][1] == 7


def test_results_are_the_callers():
    @ev.function
    def f(x):
        return x * 2

    first = f(np.ones(3))
    second = f(np.full(3, 5.0))
    np.testing.assert_allclose(first, 2.0)
    first[...] = -1
    np.testing.assert_allclose(f(np.full(3, 5.0)), 10.0)
    assert second is not first


def test_the_cache_is_bounded_least_recently_used_out():
    f = ev.function(lambda x: x + 1, max_programs=2)
    f(np.ones(1))
    f(np.ones(2))
    f(np.ones(1))                   # 1 is now the most recent
    f(np.ones(3))                   # 2 goes
    assert list(f.programs) == ["(float64[1])", "(float64[3])"]
    f(np.ones(2))
    assert f.trace_count == 4
    with pytest.raises(ev.UsageError):
        ev.function(lambda x: x, max_programs=0)


def test_model_parameters_are_read_in_place_and_get_gradients():
    model = ev.nn.Linear(3, 2, seed=0)
    opt = ev.solvers.SGD(model, lr=0.1)

    @ev.function
    def step(x, y):
        loss = ev.mean((model(x) - y) ** 2)
        grads = ev.grad(loss, model)
        assert set(grads) == {"linear.W", "linear.b"}
        return loss

    x = np.ones((4, 3), F32)
    y = np.zeros((4, 2), F32)
    W, b = model["linear.W"], model["linear.b"]
    want = float(np.mean((x @ W + b - y) ** 2))
    assert float(step(x, y)) == pytest.approx(want, rel=1e-6)
    gW = 2 * x.T @ (x @ W + b - y) / 8
    np.testing.assert_allclose(model.params()[0].grad, gW, rtol=1e-5)
    opt.step()
    np.testing.assert_allclose(W, model["linear.W"])      # the same array, updated in place
    want2 = float(np.mean((x @ W + b - y) ** 2))
    assert float(step(x, y)) == pytest.approx(want2, rel=1e-6) and want2 < want
    assert step.trace_count == 1


def test_a_model_as_an_argument_is_static_by_identity():
    f = ev.function(lambda m, x: m(x))
    a, b = ev.nn.Linear(2, 2, seed=0), ev.nn.Linear(2, 2, seed=1)
    x = np.ones((1, 2), F32)
    np.testing.assert_allclose(f(a, x), x @ a["linear.W"] + a["linear.b"], rtol=1e-6)
    np.testing.assert_allclose(f(b, x), x @ b["linear.W"] + b["linear.b"], rtol=1e-6)
    assert f.trace_count == 2


def test_python_control_flow_on_a_traced_value_says_what_to_use():
    @ev.function
    def f(x):
        if ev.sum(x) > 0:
            return x
        return -x

    with pytest.raises(ev.TraceError, match=r"ev\.cond.*ev\.while_loop.*ev\.scan"):
        f(np.ones(3))
    assert f.trace_count == 0


def test_arguments_that_cannot_be_traced_are_usage_errors():
    f = ev.function(lambda x: x)
    g = ev.Graph()
    with pytest.raises(ev.UsageError, match="graph node"):
        f(g.scalar("s"))
    with pytest.raises(ev.UsageError, match="neither an array nor hashable"):
        f([{1, 2}])
    with pytest.raises(ev.UsageError, match="takes a function"):
        ev.function(3)
    other = ev.Graph().scalar("o")
    with pytest.raises(ev.UsageError, match="another graph"):
        ev.function(lambda x: other)(np.ones(1))


def f_loss(w, x):
    return ev.sum(ev.tanh(x @ w) ** 2)


def fd(fn, arrays, k, eps=1e-6):
    out = np.zeros_like(arrays[k])
    for i in np.ndindex(out.shape):
        a = [v.copy() for v in arrays]
        a[k][i] += eps
        b = [v.copy() for v in arrays]
        b[k][i] -= eps
        out[i] = (fn(*a) - fn(*b)) / (2 * eps)
    return out


def np_loss(w, x):
    return float(np.sum(np.tanh(x @ w) ** 2))


def test_value_and_grad_matches_finite_differences():
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    value, gw = ev.value_and_grad(f_loss)(w, x)
    assert float(value) == pytest.approx(np_loss(w, x), rel=1e-12)
    np.testing.assert_allclose(gw, fd(np_loss, [w, x], 0), rtol=1e-6, atol=1e-9)
    gw2, gx = ev.grad(f_loss, argnums=(0, 1))(w, x)
    np.testing.assert_allclose(gw2, gw, rtol=1e-12)
    np.testing.assert_allclose(gx, fd(np_loss, [w, x], 1), rtol=1e-6, atol=1e-9)
    tree = ev.grad(lambda p, x: f_loss(p["w"], x))({"w": w}, x)
    np.testing.assert_allclose(tree["w"], gw, rtol=1e-12)


def test_value_and_grad_of_a_model():
    model = ev.nn.Linear(3, 1, seed=2, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((5, 3))
    loss, grads = ev.value_and_grad(lambda m, x: ev.sum(m(x) ** 2))(model, x)
    r = x @ model["linear.W"] + model["linear.b"]
    np.testing.assert_allclose(grads["linear.W"], 2 * x.T @ r, rtol=1e-10)
    np.testing.assert_allclose(grads["linear.b"], 2 * r.sum(0), rtol=1e-10)


def test_grad_of_a_non_scalar_is_a_grad_error():
    with pytest.raises(ev.GradError, match="scalar"):
        ev.grad(lambda x: x * 2)(np.ones(3))
    with pytest.raises(ev.UsageError, match="out of range"):
        ev.grad(lambda x: ev.sum(x), argnums=3)(np.ones(3))


def test_the_overhead_benchmark_runs():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_function
    bench_function.main(["--smoke"])        # its steps agree (it asserts the losses match)


def test_grad_without_a_callable_or_wrt_says_what_to_pass():
    g = ev.Graph()
    a = g.scalar("a")
    with pytest.raises(ev.UsageError, match=r"ev.grad\(mul#\d+, wrt\).*ev.grad\(fn\)"):
        ev.grad(a * a)
    with pytest.raises(ev.UsageError, match="got int"):
        ev.grad(3)
    with pytest.raises(ev.UsageError, match="argnums="):
        ev.grad(lambda x: ev.sum(x), wrt=a)
    with pytest.raises(ev.GradError, match="y must be a Node"):
        ev.grad(np.ones(3), a, seed=np.ones(3))            # the node form's own errors
    gw = ev.grad(ev.sum(a * 3.0), {"a": a}.values())
    assert len(gw) == 1


def bn_net():
    return ev.nn.Sequential(ev.nn.Conv2d(1, 2, 3, padding=1, bias=False, seed=0), ev.nn.BatchNorm2d(2),
                            ev.nn.Flatten(), ev.nn.Linear(32, 3, seed=1), name="bn")


def test_a_traced_step_writes_back_batch_norms_statistics_and_traces_each_mode_apart():
    net, ref = bn_net(), bn_net()
    x = np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32) + 1
    f = ev.function(lambda model, x: model(x))
    f(net, x)
    g = ev.Graph()                                  # the same run with the updates given by hand
    xn = g.tensor("x", x.shape, np.float32)
    ev.TapeMachine(g, outputs=ref(xn), updates=ev.nn.updates(ref, g)).run({xn: x})
    moved = net["bn.1.running_mean"].copy()
    assert np.abs(moved).min() > 0
    np.testing.assert_allclose(moved, ref["bn.1.running_mean"], rtol=1e-6)
    np.testing.assert_allclose(net["bn.1.running_var"], ref["bn.1.running_var"], rtol=1e-6)
    net.eval()
    y_eval = f(net, x)
    np.testing.assert_array_equal(net["bn.1.running_mean"], moved)      # evaluation: no update
    g = ev.Graph()
    xn = g.tensor("x", x.shape, np.float32)
    out = net(xn)
    np.testing.assert_allclose(y_eval, ev.TapeMachine(g, outputs=out).run({xn: x})[0], rtol=1e-5)
    net.train()
    assert f.trace_count == 2 and sorted(f.programs) == ["(<model, eval>, float32[4, 1, 4, 4])",
                                                         "(<model>, float32[4, 1, 4, 4])"]
    with pytest.raises(ev.UsageError, match="updates= is not an option"):
        ev.function(lambda x: x, updates={})
