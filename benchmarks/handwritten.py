"""Handwritten numpy: forward and backward written out by hand, the no-framework limit.

Each `*_step` runs one training step (forward, backward, in-place SGD) on the
same weight arrays the exprvm graphs use, and returns the loss. Written the way
one writes these without a framework: per-step loops, gradients accumulated
with +=, numpy allocating its temporaries.
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


def rnn_step(w, ids, targets, lr=0.01):
    Wxh, Whh, bh, Why, by = w["Wxh"], w["Whh"], w["bh"], w["Why"], w["by"]
    steps, batch = ids.shape
    rows = np.arange(batch)
    hs = [np.zeros((batch, Whh.shape[0]), Whh.dtype)]
    ps = []
    loss = 0.0
    for t in range(steps):
        h = np.tanh(Wxh[ids[t]] + hs[-1] @ Whh + bh)
        y = h @ Why + by
        p, lse = _softmax_rows(y)
        loss += np.sum(lse - y[rows, targets[t]])
        hs.append(h)
        ps.append(p)
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dh_next = np.zeros_like(hs[0])
    for t in reversed(range(steps)):
        dy = ps[t]
        dy[rows, targets[t]] -= 1
        g["Why"] += hs[t + 1].T @ dy
        g["by"] += dy.sum(axis=0)
        dh = dy @ Why.T + dh_next
        da = (1 - hs[t + 1] * hs[t + 1]) * dh
        g["bh"] += da.sum(axis=0)
        np.add.at(g["Wxh"], ids[t], da)
        g["Whh"] += hs[t].T @ da
        dh_next = da @ Whh.T
    sgd(w, g, lr)
    return loss


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_step(w, ids, targets, lr=0.01):
    Wxh, Whh, bh, Why, by = w["Wxh"], w["Whh"], w["bh"], w["Why"], w["by"]
    steps, batch = ids.shape
    H = Whh.shape[0]
    rows = np.arange(batch)
    zero = np.zeros((batch, H), Whh.dtype)
    hs, cs, cache, ps = [zero], [zero], [], []
    loss = 0.0
    for t in range(steps):
        z = Wxh[ids[t]] + hs[-1] @ Whh + bh
        i, f, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), _sigmoid(z[:, 2 * H:3 * H])
        cand = np.tanh(z[:, 3 * H:])
        c = f * cs[-1] + i * cand
        tc = np.tanh(c)
        h = o * tc
        y = h @ Why + by
        p, lse = _softmax_rows(y)
        loss += np.sum(lse - y[rows, targets[t]])
        hs.append(h)
        cs.append(c)
        cache.append((i, f, o, cand, tc))
        ps.append(p)
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dh_next, dc_next = np.zeros_like(zero), np.zeros_like(zero)
    for t in reversed(range(steps)):
        i, f, o, cand, tc = cache[t]
        dy = ps[t]
        dy[rows, targets[t]] -= 1
        g["Why"] += hs[t + 1].T @ dy
        g["by"] += dy.sum(axis=0)
        dh = dy @ Why.T + dh_next
        dc = dh * o * (1 - tc * tc) + dc_next
        dz = np.hstack((dc * cand * i * (1 - i), dc * cs[t] * f * (1 - f),
                        dh * tc * o * (1 - o), dc * i * (1 - cand * cand)))
        dc_next = dc * f
        g["bh"] += dz.sum(axis=0)
        np.add.at(g["Wxh"], ids[t], dz)
        g["Whh"] += hs[t].T @ dz
        dh_next = dz @ Whh.T
    sgd(w, g, lr)
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
