"""The benchmark models as exprvm graphs (also imported by the tests, at small sizes).

Each builder takes a Graph and numpy parameter arrays (shared with the
handwritten versions, so every implementation trains the same numbers) and
returns a Model: the cost, the parameter and input leaves, and a feeds dict.
"""
from dataclasses import dataclass, field

import numpy as np

import exprvm as ev

F32 = np.float32


@dataclass
class Model:
    graph: object
    cost: object
    params: list                 # parameter leaves, in the order of the weights dict
    inputs: dict                 # name -> input leaf
    outputs: list = field(default_factory=list)

    def feeds(self, data):
        return {self.inputs[k]: v for k, v in data.items()}


# -- weights and data ------------------------------------------------------------------

def rnn_weights(vocab, hidden, seed=0, dtype=F32, gates=1):
    rng = np.random.default_rng(seed)
    s = 0.1
    return {
        "Wxh": (rng.standard_normal((vocab, gates * hidden)) * s).astype(dtype),
        "Whh": (rng.standard_normal((hidden, gates * hidden)) * s).astype(dtype),
        "bh": np.zeros(gates * hidden, dtype),
        "Why": (rng.standard_normal((hidden, vocab)) * s).astype(dtype),
        "by": np.zeros(vocab, dtype),
    }


def rnn_data(vocab, steps, batch, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (steps + 1, batch))
    return {"ids": ids[:-1].copy(), "targets": ids[1:].copy()}


def mlp_weights(sizes=(784, 128, 10), seed=0, dtype=F32):
    rng = np.random.default_rng(seed)
    w = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w[f"W{i}"] = (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dtype)
        w[f"b{i}"] = np.zeros(b, dtype)
    return w


def mlp_data(sizes=(784, 128, 10), batch=64, seed=1, dtype=F32):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, sizes[0])).astype(dtype),
            "y": rng.integers(0, sizes[-1], batch)}


# -- graphs ------------------------------------------------------------------------------

def _params(g, weights):
    return {k: g.tensor(k, v.shape, v.dtype, value=v) for k, v in weights.items()}


def _sequence(g, steps, batch, data):
    """The character ids: input leaves to feed, or (data given) this step's arrays as constants
    (or a traced function's (ids, targets) nodes)."""
    if isinstance(data, tuple):
        return data
    if data is not None:
        return data["ids"], data["targets"]
    return g.tensor("ids", (steps, batch), np.int64), g.tensor("targets", (steps, batch), np.int64)


def _recurrent_leaves(g, weights, steps, batch, data):
    """A recurrent model's parameter leaves, hidden size, dtype and (ids, targets)."""
    p = _params(g, weights)
    ids, targets = _sequence(g, steps, batch, data)
    return p, weights["Whh"].shape[0], weights["Whh"].dtype, ids, targets


def _inputs(p, ids):
    """Every step's input rows at once, bias included: Wxh[ids] + bh, (steps, batch, G*H)."""
    return ev.take(p["Wxh"], ids) + p["bh"]


def _output_loss(p, hs, targets):
    """The output layer and its cross-entropy, summed, once over all steps' hidden states
    (a list of per-step nodes, or one (steps, batch, hidden) node)."""
    if isinstance(hs, ev.Node):
        steps, batch, hidden = hs.shape
        Hs = ev.reshape(hs, (steps * batch, hidden))
    else:
        steps, (batch, hidden) = len(hs), hs[0].shape
        Hs = ev.reshape(ev.stack(hs), (steps * batch, hidden))
    flat = targets.reshape(-1)  # NOTE: an ndarray's or a Node's reshape, alike
    return ev.sum(ev.cross_entropy(Hs @ p["Why"] + p["by"], flat))


def _lstm_cell(z, c, H):
    """One LSTM step from the gates' pre-activations z (batch, 4H), laid out input, forget,
    output, candidate, and the cell state c: the new (h, c)."""
    i, f, o = ev.sigmoid(z[:, :H]), ev.sigmoid(z[:, H:2 * H]), ev.sigmoid(z[:, 2 * H:3 * H])
    cand = ev.tanh(z[:, 3 * H:])
    c = f * c + i * cand
    return o * ev.tanh(c), c


def _model(g, p, loss, grads, data, ids, targets):
    if grads:
        ev.grad(loss, list(p.values()))
    return Model(g, loss, list(p.values()), {} if data is not None else {"ids": ids, "targets": targets})


def traced(name, weights, small=False):
    """The benchmark's step as a function of its data arrays for ev.function: builds the
    Model in the traced graph over the weight arrays (read in place) and returns the loss;
    fn.params holds the parameter leaves of the latest trace."""
    s = sizes(name, small)

    def fn(a, b):
        g = a.graph
        if name == "mlp":
            m = mlp(g, weights, s["batch"], data=(a, b))
        elif name == "lstm_b32":
            m = lstm(g, weights, s["steps"], s["batch"], data=(a, b))
        else:
            m = char_rnn(g, weights, s["steps"], s["batch"], data=(a, b))
        fn.params = m.params
        return m.cost
    fn.__name__ = f"{name}_step"
    return fn


# NOTE: the recurrent models are written as the handwritten steps are: only the
# recurrence runs step by step; the input rows and the output layer run once over
# all steps (as an exprvm, PyTorch or JAX user batches them too).

def char_rnn(g, weights, steps, batch, grads=True, data=None):
    """Vanilla tanh RNN over `steps` characters; loss: cross-entropy summed over steps."""
    p, H, dt, ids, targets = _recurrent_leaves(g, weights, steps, batch, data)
    X = _inputs(p, ids)
    h = g.constant(np.zeros((batch, H), dt))
    hs = []
    for t in range(steps):
        h = ev.tanh(X[t] + h @ p["Whh"])
        hs.append(h)
    return _model(g, p, _output_loss(p, hs, targets), grads, data, ids, targets)


def lstm(g, weights, steps, batch, grads=True, data=None):
    """LSTM with the four gates in one matrix (input, forget, output, candidate)."""
    p, H, dt, ids, targets = _recurrent_leaves(g, weights, steps, batch, data)
    X = _inputs(p, ids)
    h = g.constant(np.zeros((batch, H), dt))
    c = g.constant(np.zeros((batch, H), dt))
    hs = []
    for t in range(steps):
        z = X[t] + h @ p["Whh"]
        h, c = _lstm_cell(z, c, H)
        hs.append(h)
    return _model(g, p, _output_loss(p, hs, targets), grads, data, ids, targets)


def char_rnn_scan(g, weights, steps, batch, grads=True, data=None, checkpoint=None):
    """char_rnn with the recurrence as one ev.scan (the same ops, one loop instruction)."""
    p, H, dt, ids, targets = _recurrent_leaves(g, weights, steps, batch, data)
    X = _inputs(p, ids)

    def step(h, x):
        h = ev.tanh(x + h @ p["Whh"])
        return h, h

    _, hs = ev.scan(step, g.constant(np.zeros((batch, H), dt)), X, checkpoint=checkpoint)
    return _model(g, p, _output_loss(p, hs, targets), grads, data, ids, targets)


def lstm_scan(g, weights, steps, batch, grads=True, data=None, checkpoint=None):
    """lstm with the recurrence as one ev.scan."""
    p, H, dt, ids, targets = _recurrent_leaves(g, weights, steps, batch, data)
    X = _inputs(p, ids)

    def step(carry, x):
        h, c = carry
        z = x + h @ p["Whh"]
        h, c = _lstm_cell(z, c, H)
        return (h, c), h

    zero = g.constant(np.zeros((batch, H), dt))
    _, hs = ev.scan(step, (zero, zero), X, checkpoint=checkpoint)
    return _model(g, p, _output_loss(p, hs, targets), grads, data, ids, targets)


def lstm_scan_steps(g, weights, steps, batch, grads=True, data=None, checkpoint=None):
    """lstm_scan with everything per step inside the loop: the input rows, the output
    layer and the loss (a sum the loop carries), so that what the step keeps for its
    gradient is all that grows with the sequence (what checkpoint= bounds)."""
    p, H, dt, ids, targets = _recurrent_leaves(g, weights, steps, batch, data)

    def step(carry, row):
        h, c, total = carry
        x, tg = row
        z = ev.take(p["Wxh"], x) + p["bh"] + h @ p["Whh"]
        h, c = _lstm_cell(z, c, H)
        loss = ev.sum(ev.cross_entropy(h @ p["Why"] + p["by"], tg))
        return (h, c, total + loss), None

    zero = g.constant(np.zeros((batch, H), dt))
    (_, _, total), _ = ev.scan(step, (zero, zero, g.constant(np.zeros((), dt))), (ids, targets),
                               checkpoint=checkpoint)
    return _model(g, p, total, grads, data, ids, targets)


def mlp(g, weights, batch, grads=True, data=None):
    """784-128-10 ReLU MLP; loss: mean softmax cross-entropy."""
    p = _params(g, weights)
    if isinstance(data, tuple):         # a traced function's (x, y) nodes
        x, y = data
    elif data is not None:
        x, y = g.constant(data["x"]), data["y"]
    else:
        x = g.tensor("x", (batch, weights["W0"].shape[0]), weights["W0"].dtype)
        y = g.tensor("y", (batch,), np.int64)
    h = x
    n = len(weights) // 2
    for i in range(n):
        h = h @ p[f"W{i}"] + p[f"b{i}"]
        if i < n - 1:
            h = ev.relu(h)
    loss = ev.mean(ev.cross_entropy(h, y))
    if grads:
        ev.grad(loss, list(p.values()))
    return Model(g, loss, list(p.values()), {} if data is not None else {"x": x, "y": y})


def chain(g, n=50, size=16, backward=False, dtype=F32):
    """n times x = tanh(x * w): 2n instructions forward."""
    w = g.tensor("w", (size,), dtype, value=np.linspace(0.5, 1.0, size).astype(dtype))
    x0 = g.tensor("x", (size,), dtype)
    x = x0
    for _ in range(n):
        x = ev.tanh(x * w)
    if not backward:
        return Model(g, x, [w], {"x": x0}, outputs=[x])
    cost = ev.sum(x)
    ev.grad(cost, [w])
    return Model(g, cost, [w], {"x": x0}, outputs=[cost])


def small_expr(g, dtype=F32):
    """z = x*y + x*x + y, with dz/dx and dz/dy."""
    x, y = g.scalar("x", dtype), g.scalar("y", dtype)
    z = x * y + x * x + y
    gx, gy = ev.grad(z, [x, y])
    return Model(g, z, [], {"x": x, "y": y}, outputs=[z, gx, gy])


def sizes(name, small=False):
    if name in ("rnn_b1", "rnn_b32", "lstm_b32"):
        vocab, hidden, steps = (12, 8, 5) if small else (65, 128, 25)
        batch = 1 if name == "rnn_b1" else (4 if small else 32)
        return {"vocab": vocab, "hidden": hidden, "steps": steps, "batch": batch}
    if name == "mlp":
        return {"sizes": (20, 8, 6) if small else (784, 128, 10), "batch": 6 if small else 64}
    return {}


def weights_and_data(name, small=False):
    s = sizes(name, small)
    if name in ("rnn_b1", "rnn_b32", "lstm_b32"):
        w = rnn_weights(s["vocab"], s["hidden"], gates=4 if name.startswith("lstm") else 1)
        return w, rnn_data(s["vocab"], s["steps"], s["batch"])
    if name == "mlp":
        return mlp_weights(s["sizes"]), mlp_data(s["sizes"], s["batch"])
    if name.startswith("chain"):
        return {}, {"x": np.linspace(-1, 1, 16).astype(F32)}
    return {}, {"x": np.array(1.5, F32), "y": np.array(-0.5, F32)}


def graph(name, weights, small=False, grads=True, data=None):
    """The benchmark's Model, in a new graph, over the given weight arrays. With data, the
    step's data are constants of the graph (a graph built for one step, as a LispMachine
    user builds it); without, they are inputs to feed."""
    g = ev.Graph(name)
    s = sizes(name, small)
    if name in ("rnn_b1", "rnn_b32"):
        return char_rnn(g, weights, s["steps"], s["batch"], grads, data)
    if name == "lstm_b32":
        return lstm(g, weights, s["steps"], s["batch"], grads, data)
    if name == "mlp":
        return mlp(g, weights, s["batch"], grads, data)
    if name in ("chain_fwd", "chain_bwd"):
        return chain(g, n=5 if small else 50, backward=name == "chain_bwd")
    if name == "expr":
        return small_expr(g)
    raise KeyError(name)


def build(name, small=False):
    """(model, weights, data) for a benchmark by name; small=True for tests."""
    w, data = weights_and_data(name, small)
    return graph(name, w, small), w, data


NAMES = ("rnn_b1", "rnn_b32", "lstm_b32", "mlp", "chain_fwd", "chain_bwd", "expr")
