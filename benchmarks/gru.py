"""The GRU benchmark: a char-RNN with PyTorch's GRU cell, as an exprvm graph and as
handwritten numpy (forward and backward by hand), over the same weight arrays.

    r = sigmoid(x_r + (h @ Whh + bhh)_r)       x = Wxh[ids] + bh, every step at once
    z = sigmoid(x_z + (h @ Whh + bhh)_z)
    n = tanh(x_n + r * (h @ Whh + bhh)_n)
    h = (1 - z) * n + z * h

Gate order (r, z, n) and biases as torch.nn.GRU's (W_ih = Wxh.T, b_ih = bh, W_hh = Whh.T,
b_hh = bhh), so peers.py trains the same numbers in nn.GRU. Like models.py, only the
recurrence runs step by step; the input rows, the output layer and every weight gradient
run once over all steps.
"""
import numpy as np

import exprvm as ev
import handwritten as hw
import models

NAME = "gru_b32"


def weights(vocab, hidden, seed=0, dtype=np.float32):
    w = models.rnn_weights(vocab, hidden, seed=seed, dtype=dtype, gates=3)
    w["bhh"] = np.zeros(3 * hidden, dtype)
    return w


def weights_and_data(small=False):
    s = models.sizes("lstm_b32", small)
    return weights(s["vocab"], s["hidden"]), models.rnn_data(s["vocab"], s["steps"], s["batch"])


def graph(w, small=False, grads=True, data=None):
    g = ev.Graph(NAME)
    s = models.sizes("lstm_b32", small)
    p = models._params(g, w)
    H = w["Whh"].shape[0]
    ids, targets = models._sequence(g, s["steps"], s["batch"], data)
    X = models._inputs(p, ids)
    h = g.constant(np.zeros((s["batch"], H), w["Whh"].dtype))
    hs = []
    for t in range(s["steps"]):
        x, hh = X[t], h @ p["Whh"] + p["bhh"]
        r = ev.sigmoid(x[:, :H] + hh[:, :H])
        z = ev.sigmoid(x[:, H:2 * H] + hh[:, H:2 * H])
        n = ev.tanh(x[:, 2 * H:] + r * hh[:, 2 * H:])
        h = (1 - z) * n + z * h
        hs.append(h)
    return models._model(g, p, models._output_loss(p, hs, targets), grads, data, ids, targets)


def step(w, ids, targets, lr=0.01):
    """One SGD step, forward and backward by hand; returns the loss."""
    Wxh, Whh, bh, bhh = w["Wxh"], w["Whh"], w["bh"], w["bhh"]
    steps, batch = ids.shape
    H = Whh.shape[0]
    X = Wxh[ids] + bh
    hs = np.zeros((steps + 1, batch, H), Whh.dtype)
    HH = np.empty((steps, batch, 3 * H), Whh.dtype)     # h @ Whh + bhh per step
    rz = np.empty((steps, batch, 2 * H), Whh.dtype)
    ns = np.empty((steps, batch, H), Whh.dtype)
    for t in range(steps):
        np.add(hs[t] @ Whh, bhh, out=HH[t])
        rz[t] = hw._sigmoid(X[t, :, :2 * H] + HH[t, :, :2 * H])
        r, z = rz[t, :, :H], rz[t, :, H:]
        np.tanh(X[t, :, 2 * H:] + r * HH[t, :, 2 * H:], out=ns[t])
        hs[t + 1] = (1 - z) * ns[t] + z * hs[t]
    Hs = hs[1:].reshape(-1, H)
    loss, dHs, dWhy, dby = hw._output_layer(w, Hs, targets)
    dHs = dHs.reshape(steps, batch, H)
    dX = np.empty((steps, batch, 3 * H), Whh.dtype)     # gradients of the gates' inputs
    dHH = np.empty_like(dX)
    dh_next = np.zeros((batch, H), Whh.dtype)
    for t in reversed(range(steps)):
        r, z, n = rz[t, :, :H], rz[t, :, H:], ns[t]
        dh = dHs[t] + dh_next
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (hs[t] - n) * z * (1 - z)
        dr = dn * HH[t, :, 2 * H:] * r * (1 - r)
        dX[t, :, :H], dX[t, :, H:2 * H], dX[t, :, 2 * H:] = dr, dz, dn
        dHH[t, :, :2 * H] = dX[t, :, :2 * H]
        dHH[t, :, 2 * H:] = dn * r
        dh_next = dh * z + dHH[t] @ Whh.T
    dX2, dHH2 = dX.reshape(-1, 3 * H), dHH.reshape(-1, 3 * H)
    dWxh = np.zeros_like(Wxh)
    np.add.at(dWxh, ids.reshape(-1), dX2)
    grads = {"Wxh": dWxh, "Whh": hs[:-1].reshape(-1, H).T @ dHH2, "bh": dX2.sum(axis=0),
             "bhh": dHH2.sum(axis=0), "Why": dWhy, "by": dby}
    hw.sgd(w, grads, lr)
    return loss
