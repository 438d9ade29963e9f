"""The same benchmark steps in PyTorch (eager), in PyTorch's fused recurrent layers
(torch.nn.RNN / LSTM / GRU: one matrix product and one fused cell per step, forward and
backward) and in JAX (jax.jit), when installed.

Each factory returns step() -> None or None when the library is missing. The
peers train their own copies of the weights with the same SGD; step.reset() puts
them back to where they started (see bench_models.restorer).
"""
import numpy as np


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, None
    return jax, jnp


# -- PyTorch ------------------------------------------------------------------------------

def torch_step(name, w, data, lr=0.01):
    torch = _torch()
    if torch is None or name in ("chain_fwd", "expr"):
        return None
    F = torch.nn.functional
    if name == "chain_bwd":
        w = {"w": np.linspace(0.5, 1.0, 16).astype(np.float32)}
    P = {k: torch.tensor(v, requires_grad=True) for k, v in w.items()}
    D = {k: torch.tensor(v) for k, v in data.items()}

    def loss_fn():
        if name == "mlp":
            h = torch.relu(D["x"] @ P["W0"] + P["b0"])
            return F.cross_entropy(h @ P["W1"] + P["b1"], D["y"])
        if name == "chain_bwd":
            x = D["x"]
            for _ in range(50):
                x = torch.tanh(x * P["w"])
            return x.sum()
        ids, tg = D["ids"], D["targets"]
        H = P["Whh"].shape[0]
        h = c = torch.zeros((ids.shape[1], H), dtype=P["Whh"].dtype)
        X = P["Wxh"][ids] + P["bh"]         # NOTE: batched as in models.py and handwritten.py
        hs = []
        for t in range(ids.shape[0]):
            if name == "gru_b32":           # as benchmarks/gru.py
                x, hh = X[t], h @ P["Whh"] + P["bhh"]
                r = torch.sigmoid(x[:, :H] + hh[:, :H])
                u = torch.sigmoid(x[:, H:2 * H] + hh[:, H:2 * H])
                n = torch.tanh(x[:, 2 * H:] + r * hh[:, 2 * H:])
                h = (1 - u) * n + u * h
                hs.append(h)
                continue
            z = X[t] + h @ P["Whh"]
            if name == "lstm_b32":
                i, f, o = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]), torch.sigmoid(z[:, 2 * H:3 * H])
                c = f * c + i * torch.tanh(z[:, 3 * H:])
                h = o * torch.tanh(c)
            else:
                h = torch.tanh(z)
            hs.append(h)
        Hs = torch.stack(hs).reshape(-1, H)
        return F.cross_entropy(Hs @ P["Why"] + P["by"], tg.reshape(-1), reduction="sum")

    def step():
        loss = loss_fn()
        loss.backward()
        with torch.no_grad():
            for p in P.values():
                p -= lr * p.grad
                p.grad = None

    saved = {k: p.detach().clone() for k, p in P.items()}

    def reset():
        with torch.no_grad():
            for k, p in P.items():
                p.copy_(saved[k])
    step.reset = reset
    return step


# -- PyTorch's fused recurrent layers --------------------------------------------------------

LAYERS = {"rnn_b1": "RNN", "rnn_b32": "RNN", "lstm_b32": "LSTM", "gru_b32": "GRU"}


def _gate_blocks(a, H, order):
    """a's column blocks of width H reordered (exprvm's gate order -> PyTorch's)."""
    return np.concatenate([a[..., k * H:(k + 1) * H] for k in order], axis=-1)


def torch_nn_step(name, w, data, lr=0.01):
    """The recurrent models in torch.nn.RNN / LSTM / GRU (the fused engines), on one-hot
    inputs, with the same weights: W_ih = Wxh.T (gates in PyTorch's order), b_ih = bh,
    W_hh = Whh.T, b_hh = bhh (GRU) or 0. The output layer and the summed cross-entropy as
    in the other implementations; SGD over every parameter."""
    torch = _torch()
    if torch is None or name not in LAYERS:
        return None
    F = torch.nn.functional
    V, GH = w["Wxh"].shape
    H = w["Whh"].shape[0]
    order = [0, 1, 3, 2] if name == "lstm_b32" else list(range(GH // H))   # exprvm i f o g -> i f g o
    layer = getattr(torch.nn, LAYERS[name])(V, H)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.tensor(_gate_blocks(w["Wxh"], H, order).T.copy()))
        layer.weight_hh_l0.copy_(torch.tensor(_gate_blocks(w["Whh"], H, order).T.copy()))
        layer.bias_ih_l0.copy_(torch.tensor(_gate_blocks(w["bh"], H, order)))
        layer.bias_hh_l0.copy_(torch.tensor(w["bhh"] if "bhh" in w else np.zeros(GH, np.float32)))
    Why = torch.tensor(w["Why"], requires_grad=True)
    by = torch.tensor(w["by"], requires_grad=True)
    params = list(layer.parameters()) + [Why, by]
    ids = torch.tensor(data["ids"])
    x = F.one_hot(ids, V).to(Why.dtype)                 # (steps, batch, vocab), made once
    tg = torch.tensor(data["targets"]).reshape(-1)

    def step():
        out, _ = layer(x)
        loss = F.cross_entropy(out.reshape(-1, H) @ Why + by, tg, reduction="sum")
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None

    saved = [p.detach().clone() for p in params]

    def reset():
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
    step.reset = reset
    def loss():
        with torch.no_grad():
            return float(F.cross_entropy(layer(x)[0].reshape(-1, H) @ Why + by, tg, reduction="sum"))
    step.loss = loss            # for the tests: the same loss as the other implementations
    return step


# -- JAX --------------------------------------------------------------------------------------

def jax_step(name, w, data, lr=0.01):
    jax, jnp = _jax()
    if jax is None or name == "expr":
        return None
    D = {k: jnp.asarray(v) for k, v in data.items()}

    def loss_fn(P, D):
        if name == "mlp":
            h = jax.nn.relu(D["x"] @ P["W0"] + P["b0"])
            lsm = jax.nn.log_softmax(h @ P["W1"] + P["b1"])
            return -jnp.mean(jnp.take_along_axis(lsm, D["y"][:, None], 1))
        if name.startswith("chain"):
            x = D["x"]
            for _ in range(50):
                x = jnp.tanh(x * P["w"])
            return x.sum()
        ids, tg = D["ids"], D["targets"]
        H = P["Whh"].shape[0]
        h = c = jnp.zeros((ids.shape[1], H), P["Whh"].dtype)
        X = P["Wxh"][ids] + P["bh"]
        hs = []
        for t in range(ids.shape[0]):
            if name == "gru_b32":
                x, hh = X[t], h @ P["Whh"] + P["bhh"]
                r = jax.nn.sigmoid(x[:, :H] + hh[:, :H])
                u = jax.nn.sigmoid(x[:, H:2 * H] + hh[:, H:2 * H])
                h = (1 - u) * jnp.tanh(x[:, 2 * H:] + r * hh[:, 2 * H:]) + u * h
                hs.append(h)
                continue
            z = X[t] + h @ P["Whh"]
            if name == "lstm_b32":
                i, f, o = (jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H]),
                           jax.nn.sigmoid(z[:, 2 * H:3 * H]))
                c = f * c + i * jnp.tanh(z[:, 3 * H:])
                h = o * jnp.tanh(c)
            else:
                h = jnp.tanh(z)
            hs.append(h)
        lsm = jax.nn.log_softmax(jnp.stack(hs).reshape(-1, H) @ P["Why"] + P["by"])
        return -jnp.sum(jnp.take_along_axis(lsm, tg.reshape(-1, 1), 1))

    if name == "chain_fwd":
        fwd = jax.jit(lambda P, D: loss_fn(P, D))
        P = {"w": jnp.asarray(np.linspace(0.5, 1.0, 16).astype(np.float32))}
        return lambda: fwd(P, D).block_until_ready()

    @jax.jit
    def update(P, D):
        loss, g = jax.value_and_grad(loss_fn)(P, D)
        return {k: P[k] - lr * g[k] for k in P}, loss

    if name == "chain_bwd":
        state = [{"w": jnp.asarray(np.linspace(0.5, 1.0, 16).astype(np.float32))}]
    else:
        state = [{k: jnp.asarray(v) for k, v in w.items()}]

    def step():
        state[0], loss = update(state[0], D)
        loss.block_until_ready()

    # NOTE: the traced program of value_and_grad alone, without jit's compile
    step.jaxpr = lambda: jax.make_jaxpr(jax.value_and_grad(loss_fn))(state[0], D)
    initial = state[0]
    step.reset = lambda: state.__setitem__(0, initial)
    return step
