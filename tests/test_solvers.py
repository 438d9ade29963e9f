import numpy as np
import pytest

from exprvm.train import solvers
from exprvm.errors import CheckpointError, DTypeError, ExprError, ShapeError


class Param:
    """A plain holder of the three attributes a solver reads."""

    def __init__(self, name, value, grad=None):
        self.name = name
        self.value = value
        self.grad = grad


# -- an independent reference: whole-array float64 math, textbook formulas -----

def ref_prepare(ws, gs, clip=None, clip_norm=None, l1=0.0, l2=0.0):
    gs = [np.asarray(g, np.float64) for g in gs]
    if clip is not None:
        gs = [np.where(g > clip, clip, np.where(g < -clip, -clip, g)) for g in gs]
    if clip_norm is not None:
        norm = np.sqrt(sum(float(np.sum(g ** 2)) for g in gs))
        if norm > clip_norm:
            gs = [g * (clip_norm / norm) for g in gs]
    return [g + l1 * np.sign(w) + l2 * w for w, g in zip(ws, gs)]


class Reference:
    """One solver's update rule, written the way papers state it."""

    def __init__(self, kind, lr, clip=None, clip_norm=None, l1=0.0, l2=0.0, **hp):
        self.kind, self.lr, self.hp = kind, lr, hp
        self.pre = dict(clip=clip, clip_norm=clip_norm, l1=l1, l2=l2)
        self.state = {}
        self.t = 0

    def step(self, ws, gs):
        gs = ref_prepare(ws, gs, **self.pre)
        self.t += 1
        return [self._one(i, w, g) for i, (w, g) in enumerate(zip(ws, gs))]

    def _one(self, i, w, g):
        lr, hp, s = self.lr, self.hp, self.state.setdefault(i, {})
        if self.kind == "SGD":
            return w - lr * g
        if self.kind == "Momentum":
            # buf = mu * buf + g; a velocity form equivalent to v = mu * v - lr * g.
            mu = hp.get("momentum", 0.9)
            s["buf"] = mu * s.get("buf", 0.0) + g
            if hp.get("nesterov"):
                return w - lr * (g + mu * s["buf"])
            return w - lr * s["buf"]
        if self.kind == "AdaGrad":
            s["G"] = s.get("G", 0.0) + g * g
            return w - lr * g / (np.sqrt(s["G"]) + hp.get("eps", 1e-8))
        if self.kind == "RMSProp":
            rho = hp.get("rho", 0.9)
            s["E"] = rho * s.get("E", 0.0) + (1 - rho) * g * g
            return w - lr * g / (np.sqrt(s["E"]) + hp.get("eps", 1e-8))
        if self.kind in ("Adam", "AdamW"):
            b1, b2, eps = hp.get("beta1", 0.9), hp.get("beta2", 0.999), hp.get("eps", 1e-8)
            if self.kind == "AdamW":
                w = w - lr * hp.get("weight_decay", 0.01) * w
            s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
            s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
            m_hat = s["m"] / (1 - b1 ** self.t)
            v_hat = s["v"] / (1 - b2 ** self.t)
            return w - lr * m_hat / (np.sqrt(v_hat) + eps)
        raise AssertionError(self.kind)


SOLVERS = [
    ("SGD", {"lr": 0.1}),
    ("Momentum", {"lr": 0.05, "momentum": 0.8}),
    ("Momentum", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("AdaGrad", {"lr": 0.1, "eps": 1e-6}),
    ("RMSProp", {"lr": 0.01, "rho": 0.85}),
    ("Adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
]
SOLVER_IDS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]

OPTIONS = [
    {},
    {"l1": 0.05},
    {"l2": 0.1},
    {"clip": 0.5},
    {"clip_norm": 1.0},
    {"l1": 0.01, "l2": 0.05, "clip": 1.5, "clip_norm": 2.0},
]
OPTION_IDS = ["plain", "l1", "l2", "clip", "clip_norm", "all"]


def make(kind, hp, options):
    options = dict(options)
    if kind == "AdamW":
        options.pop("l2", None)   # AdamW has decoupled weight_decay instead of l2
    return getattr(solvers, kind)(**hp, **options), Reference(kind, **hp, **options)


def fresh_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Param("layer/W", rng.normal(size=(3, 4)).astype(dtype)),
        Param("layer/b", rng.normal(size=4).astype(dtype)),
        Param("scale", np.array(0.7, dtype=dtype)),
    ]


def grads_for(params, rng):
    # std 2 so that clip=0.5 and clip_norm=1.0 really cut the gradient
    return [(2.0 * rng.normal(size=p.value.shape)).astype(p.value.dtype) for p in params]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("kind,hp", SOLVERS, ids=SOLVER_IDS)
def test_matches_reference_step_by_step(kind, hp, options, dtype):
    opt, ref = make(kind, hp, options)
    params = fresh_params(dtype)
    arrays = [p.value for p in params]
    expected = [p.value.astype(np.float64) for p in params]
    rng = np.random.default_rng(1)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for _ in range(6):
        gs = grads_for(params, rng)
        for p, g in zip(params, gs):
            p.grad = g
        opt.step(params)
        expected = ref.step(expected, gs)
        for p, arr, exp in zip(params, arrays, expected):
            assert p.value is arr                      # updated in place
            assert p.value.dtype == dtype
            np.testing.assert_allclose(p.value, exp, **tol, err_msg=p.name)


@pytest.mark.parametrize("kind,hp", SOLVERS, ids=SOLVER_IDS)
def test_grad_is_left_untouched(kind, hp):
    opt, _ = make(kind, hp, {"clip": 0.1, "l2": 0.5})
    p = Param("w", np.ones(5), np.full(5, 3.0))
    opt.step([p])
    np.testing.assert_array_equal(p.grad, np.full(5, 3.0))


QUADRATIC_LR = {"SGD": 0.05, "Momentum": 0.02, "AdaGrad": 0.5,
                "RMSProp": 0.01, "Adam": 0.05, "AdamW": 0.05}


@pytest.mark.parametrize("kind,hp", SOLVERS, ids=SOLVER_IDS)
def test_converges_on_a_quadratic(kind, hp):
    # f(w) = 1/2 sum a * (w - c)^2, badly scaled on purpose
    a = np.array([1.0, 10.0, 3.0])
    c = np.array([1.0, -2.0, 0.5])
    hp = dict(hp, lr=QUADRATIC_LR[kind])
    if kind == "AdamW":
        hp["weight_decay"] = 0.0   # decay would move the minimum away from c
    opt = getattr(solvers, kind)(**hp)
    p = Param("w", np.zeros(3))
    start = np.linalg.norm(p.value - c)
    for _ in range(600):
        p.grad = a * (p.value - c)
        opt.step([p])
    assert np.linalg.norm(p.value - c) < 0.02 * start


def separable_data(rng, n=300):
    w_true, b_true = np.array([1.5, -2.0]), 0.3
    x = rng.uniform(-2, 2, size=(4 * n, 2))
    margin = x @ w_true + b_true
    keep = np.abs(margin) > 0.5
    return x[keep][:n], (margin[keep][:n] > 0).astype(np.float64)


LOGISTIC_LR = {"SGD": 0.5, "Momentum": 0.2, "AdaGrad": 0.5,
               "RMSProp": 0.02, "Adam": 0.05, "AdamW": 0.05}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,hp", SOLVERS, ids=SOLVER_IDS)
def test_trains_logistic_regression(kind, hp, dtype):
    x, y = separable_data(np.random.default_rng(3))
    x, y = x.astype(dtype), y.astype(dtype)
    opt = getattr(solvers, kind)(**dict(hp, lr=LOGISTIC_LR[kind]))
    w = Param("w", np.zeros(2, dtype))
    b = Param("b", np.zeros((), dtype))

    def accuracy():
        return np.mean(((x @ w.value + b.value) > 0) == (y > 0.5))

    assert accuracy() < 0.9
    for _ in range(300):
        p = 1.0 / (1.0 + np.exp(-(x @ w.value + b.value)))
        w.grad = x.T @ (p - y) / len(y)          # d mean cross-entropy / dw
        b.grad = np.asarray(np.mean(p - y))
        opt.step([w, b])
    assert w.value.dtype == dtype and b.value.dtype == dtype
    assert accuracy() >= 0.97


# -- hand-computed details ------------------------------------------------------

def test_clip_is_elementwise_and_clip_norm_is_global():
    p = Param("p", np.zeros(3), np.array([10.0, -10.0, 0.1]))
    solvers.SGD(lr=1.0, clip=2.0).step([p])
    np.testing.assert_allclose(p.value, [-2.0, 2.0, -0.1])

    # two parameters with gradients (3,) and (4,): global norm 5, clipped to 1
    a, b = Param("a", np.zeros(1), np.array([3.0])), Param("b", np.zeros(1), np.array([4.0]))
    solvers.SGD(lr=1.0, clip_norm=1.0).step([a, b])
    np.testing.assert_allclose([a.value[0], b.value[0]], [-0.6, -0.8])

    # below the threshold nothing is rescaled
    c = Param("c", np.zeros(1), np.array([0.5]))
    solvers.SGD(lr=1.0, clip_norm=1.0).step([c])
    np.testing.assert_allclose(c.value, [-0.5])


def test_none_grad_is_skipped_and_adam_counts_steps_per_parameter():
    opt = solvers.Adam(lr=0.1)
    a = Param("a", np.zeros(2), np.array([1.0, -2.0]))
    b = Param("b", np.ones(2), None)
    with pytest.warns(solvers.MissingGradWarning, match="no gradient for 'b'"):
        opt.step([a, b])
    np.testing.assert_array_equal(b.value, np.ones(2))
    assert "b/m" not in opt.state_dict()
    b.grad = np.array([0.3, -5.0])
    opt.step([a, b])
    # a bias-corrected first step of Adam moves each weight by ~lr against the gradient
    np.testing.assert_allclose(b.value, [0.9, 1.1], rtol=1e-6)
    assert opt.steps == 2
    assert int(opt.state_dict()["b/t"]) == 1 and int(opt.state_dict()["a/t"]) == 2


def test_float64_gradient_updates_float32_parameter_in_float32():
    p = Param("p", np.ones(3, np.float32), np.full(3, 0.5, np.float64))
    arr = p.value
    solvers.Momentum(lr=0.1).step([p])
    assert p.value is arr and p.value.dtype == np.float32
    np.testing.assert_allclose(p.value, 0.95)


def test_dict_keys_name_the_state():
    w = Param("ignored", np.zeros(2), np.ones(2))
    opt = solvers.RMSProp(lr=0.1)
    opt.step({"enc.W": w})
    assert "enc.W/mean_sq" in opt.state_dict()


# -- state_dict ---------------------------------------------------------------------

@pytest.mark.parametrize("kind,hp", SOLVERS, ids=SOLVER_IDS)
def test_state_dict_resumes_identically(kind, hp, tmp_path):
    opt_a, _ = make(kind, hp, {"clip_norm": 3.0, "l1": 0.01})
    pa = fresh_params(np.float32)
    rng = np.random.default_rng(7)
    grads = [grads_for(pa, rng) for _ in range(8)]
    for gs in grads[:4]:
        for p, g in zip(pa, gs):
            p.grad = g
        opt_a.step(pa)

    state = opt_a.state_dict()
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items())
    np.savez(tmp_path / "s.npz", **state)               # flat and pickle-free
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        state = dict(f)

    pb = [Param(p.name, p.value.copy()) for p in pa]
    opt_b, _ = make(kind, hp, {"clip_norm": 3.0, "l1": 0.01})
    opt_b.load_state_dict(state, pb)
    assert opt_b.steps == 4
    for gs in grads[4:]:
        for p, q, g in zip(pa, pb, gs):
            p.grad, q.grad = g, g.copy()
        opt_a.step(pa)
        opt_b.step(pb)
        for p, q in zip(pa, pb):
            np.testing.assert_array_equal(p.value, q.value)


def test_state_dict_is_a_copy():
    p = Param("p", np.zeros(2), np.ones(2))
    opt = solvers.Adam()
    opt.step([p])
    saved = opt.state_dict()
    m = saved["p/m"].copy()
    opt.step([p])
    np.testing.assert_array_equal(saved["p/m"], m)


def trained_adam():
    p = Param("enc/W", np.zeros((2, 3)), np.ones((2, 3)))
    opt = solvers.Adam()
    opt.step([p])
    return opt, opt.state_dict()


def test_load_state_dict_wrong_shape_names_the_parameter():
    _, state = trained_adam()
    opt = solvers.Adam()
    with pytest.raises(CheckpointError, match="enc/W"):
        opt.load_state_dict(state, [Param("enc/W", np.zeros((3, 2)))])
    with pytest.raises(CheckpointError, match="enc/W"):
        opt.load_state_dict(state, [Param("enc/W", np.zeros((2, 3), np.float32))])
    assert opt.state_dict() == {"kind": np.array("Adam"), "step": np.array(0)}


def test_load_state_dict_missing_parameter_and_wrong_kind():
    _, state = trained_adam()
    with pytest.raises(CheckpointError, match="dec/W"):
        solvers.Adam().load_state_dict(state, [Param("dec/W", np.zeros((2, 3)))])
    with pytest.raises(CheckpointError, match="Adam"):
        solvers.RMSProp().load_state_dict(state, [Param("enc/W", np.zeros((2, 3)))])


def test_duplicate_names_cannot_be_saved():
    opt = solvers.Momentum()
    opt.step([Param("w", np.zeros(2), np.ones(2)), Param("w", np.zeros(3), np.ones(3))])
    with pytest.raises(CheckpointError, match="'w'"):
        opt.state_dict()


# -- errors -----------------------------------------------------------------------

def test_bad_gradient_names_the_parameter_and_updates_nothing():
    good = Param("good", np.zeros(2), np.ones(2))
    bad = Param("bad", np.zeros(2), np.ones(3))
    with pytest.raises(ShapeError, match="bad"):
        solvers.SGD(lr=0.1).step([good, bad])
    np.testing.assert_array_equal(good.value, np.zeros(2))


def test_non_float_value_is_a_dtype_error():
    with pytest.raises(DTypeError, match="counts"):
        solvers.SGD().step([Param("counts", np.zeros(2, np.int64), np.ones(2))])


@pytest.mark.parametrize("make_bad, message", [
    (lambda: solvers.SGD(lr=0), "lr must be a finite number > 0, got 0"),
    (lambda: solvers.SGD(lr=0.1, l2=-1), "l2 must be a finite number >= 0, got -1"),
    (lambda: solvers.SGD(lr=0.1, clip=0), "clip must be a finite number > 0, got 0"),
    (lambda: solvers.Adam(beta1=1.0), r"beta1 must be in \[0, 1\), got 1.0"),
    (lambda: solvers.RMSProp(rho=-0.1), r"rho must be in \[0, 1\), got -0.1"),
    (lambda: solvers.AdaGrad(eps=0), "eps must be a finite number > 0, got 0"),
    (lambda: solvers.AdamW(weight_decay=-0.1), "weight_decay must be a finite number >= 0, got -0.1"),
])
def test_bad_hyper_parameters(make_bad, message):
    with pytest.raises(ExprError, match=f"solver: {message}"):
        make_bad()


def test_listing_a_parameter_twice_is_an_error():
    p = Param("w", np.zeros(2), np.ones(2))
    with pytest.raises(ExprError, match="twice"):
        solvers.SGD().step([p, p])
