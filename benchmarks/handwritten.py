"""Handwritten numpy: forward and backward written out by hand, the no-framework limit.

Each `*_step` runs one training step (forward, backward, in-place SGD) on the
same weight arrays the exprvm graphs use, and returns the loss. The recurrent
models loop over time only where the recurrence needs it and do everything
else (embedding, output layer, loss, weight gradients) once over all steps.
"""
import numpy as np


def sgd(weights, grads, lr):
    for k, d in grads.items():
        weights[k] -= lr * d


def _softmax_rows(y):
    m = y.max(axis=1, keepdims=True)
    e = np.exp(y - m)
    s = e.sum(axis=1, keepdims=True)
    return e / s, np.log(s[:, 0]) + m[:, 0]


def _output_layer(w, Hs, targets):
    """Logits, loss and their gradient for all steps at once: (loss, dHs, grads of Why, by)."""
    Why, by = w["Why"], w["by"]
    tflat = targets.reshape(-1)
    rows = np.arange(len(tflat))
    Y = Hs @ Why + by
    P, lse = _softmax_rows(Y)
    loss = np.sum(lse - Y[rows, tflat])
    P[rows, tflat] -= 1                 # now dY
    return loss, P @ Why.T, Hs.T @ P, P.sum(axis=0)


def rnn_step(w, ids, targets, lr=0.01):
    """Per-step work only where the recurrence needs it; the input embedding, the output
    layer and every weight gradient run once over all steps (matrices of steps*batch rows)."""
    Wxh, Whh, bh = w["Wxh"], w["Whh"], w["bh"]
    steps, batch = ids.shape
    H = Whh.shape[0]
    X = Wxh[ids] + bh                                   # (steps, batch, H)
    hs = np.zeros((steps + 1, batch, H), Whh.dtype)
    for t in range(steps):
        np.tanh(X[t] + hs[t] @ Whh, out=hs[t + 1])
    Hs = hs[1:].reshape(-1, H)
    loss, dHs, dWhy, dby = _output_layer(w, Hs, targets)
    dHs = dHs.reshape(steps, batch, H)
    dA = np.empty_like(dHs)
    dh_next = np.zeros((batch, H), Whh.dtype)
    for t in reversed(range(steps)):
        h = hs[t + 1]
        np.multiply(1 - h * h, dHs[t] + dh_next, out=dA[t])
        dh_next = dA[t] @ Whh.T
    dA2 = dA.reshape(-1, H)
    dWxh = np.zeros_like(Wxh)
    np.add.at(dWxh, ids.reshape(-1), dA2)
    grads = {"Wxh": dWxh, "Whh": hs[:-1].reshape(-1, H).T @ dA2, "bh": dA2.sum(axis=0),
             "Why": dWhy, "by": dby}
    sgd(w, grads, lr)
    return loss


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_step(w, ids, targets, lr=0.01):
    """Gates in one matrix (input, forget, output | candidate); batched like rnn_step."""
    Wxh, Whh, bh = w["Wxh"], w["Whh"], w["bh"]
    steps, batch = ids.shape
    H = Whh.shape[0]
    X = Wxh[ids] + bh
    hs = np.zeros((steps + 1, batch, H), Whh.dtype)
    cs = np.zeros((steps + 1, batch, H), Whh.dtype)
    gates = np.empty((steps, batch, 4 * H), Whh.dtype)  # sigmoid(i, f, o) | tanh(candidate)
    tcs = np.empty((steps, batch, H), Whh.dtype)
    for t in range(steps):
        z = X[t] + hs[t] @ Whh
        a = gates[t]
        a[:, :3 * H] = _sigmoid(z[:, :3 * H])
        np.tanh(z[:, 3 * H:], out=a[:, 3 * H:])
        i, f, o, cand = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.add(f * cs[t], i * cand, out=cs[t + 1])
        np.tanh(cs[t + 1], out=tcs[t])
        np.multiply(o, tcs[t], out=hs[t + 1])
    Hs = hs[1:].reshape(-1, H)
    loss, dHs, dWhy, dby = _output_layer(w, Hs, targets)
    dHs = dHs.reshape(steps, batch, H)
    dZ = np.empty_like(gates)
    dh_next = np.zeros((batch, H), Whh.dtype)
    dc_next = np.zeros_like(dh_next)
    for t in reversed(range(steps)):
        a, tc = gates[t], tcs[t]
        i, f, o, cand = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        dh = dHs[t] + dh_next
        dc = dh * o * (1 - tc * tc) + dc_next
        d = dZ[t]
        d[:, :H] = dc * cand
        d[:, H:2 * H] = dc * cs[t]
        d[:, 2 * H:3 * H] = dh * tc
        d[:, :3 * H] *= a[:, :3 * H] * (1 - a[:, :3 * H])
        d[:, 3 * H:] = dc * i * (1 - cand * cand)
        dc_next = dc * f
        dh_next = d @ Whh.T
    dZ2 = dZ.reshape(-1, 4 * H)
    dWxh = np.zeros_like(Wxh)
    np.add.at(dWxh, ids.reshape(-1), dZ2)
    grads = {"Wxh": dWxh, "Whh": hs[:-1].reshape(-1, H).T @ dZ2, "bh": dZ2.sum(axis=0),
             "Why": dWhy, "by": dby}
    sgd(w, grads, lr)
    return loss


def mlp_step(w, x, y, lr=0.01):
    W0, b0, W1, b1 = w["W0"], w["b0"], w["W1"], w["b1"]
    n = len(y)
    rows = np.arange(n)
    a = x @ W0 + b0
    h = np.maximum(a, 0)
    z = h @ W1 + b1
    p, lse = _softmax_rows(z)
    loss = np.mean(lse - z[rows, y])
    dz = p
    dz[rows, y] -= 1
    dz /= n
    dh = (dz @ W1.T) * (a > 0)
    grads = {"W1": h.T @ dz, "b1": dz.sum(axis=0), "W0": x.T @ dh, "b0": dh.sum(axis=0)}
    sgd(w, grads, lr)
    return loss


def chain_forward(x, w, n=50):
    for _ in range(n):
        x = np.tanh(x * w)
    return x


def chain_backward(x, w, n=50):
    """Forward, then d sum(x_n) / dw by hand."""
    xs = [x]
    for _ in range(n):
        xs.append(np.tanh(xs[-1] * w))
    g = np.ones_like(x)
    dw = np.zeros_like(w)
    for k in reversed(range(n)):
        d = g * (1 - xs[k + 1] * xs[k + 1])
        dw += d * xs[k]
        g = d * w
    return xs[-1].sum(), dw


def expr(x, y):
    """z = x*y + x*x + y and its two partial derivatives."""
    return x * y + x * x + y, y + 2 * x, x + 1
