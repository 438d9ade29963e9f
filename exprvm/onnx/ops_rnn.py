"""Import rows: ONNX's LSTM, GRU and RNN, with their gate orders (LSTM i o f c, GRU z r h),
layouts (time-major, or batch-major with layout=1), directions (forward, reverse,
bidirectional), sequence lengths, peepholes, clip and activations.

Each direction is the input projection of all steps at once, X @ W^T + bias (one matrix
product outside the recurrence), then the recurrence as ev.scan's step function,
``step(carry, x_t) -> (carry, y_t)``: one loop instruction on the tape, whatever the
number of steps (ev.onnx.export writes it back as an ONNX Scan); a single step is built
as plain nodes, and ev.onnx.load(..., unroll=True) builds one set of nodes per step. Past
a sequence's length the state is carried unchanged and the output is zero, as ONNX
specifies.
"""
import numpy as np

from .. import ops as ev
from .ops_math import known, opt
from .table import imports

DIRECTIONS = ("forward", "reverse", "bidirectional")
# name -> (fn(x, alpha, beta), default alpha, default beta); alpha/beta None: not read
ACTIVATIONS = {
    "Sigmoid": (lambda x, a, b: ev.sigmoid(x), None, None),
    "Tanh": (lambda x, a, b: ev.tanh(x), None, None),
    "Relu": (lambda x, a, b: ev.relu(x), None, None),
    "LeakyRelu": (lambda x, a, b: ev.leaky_relu(x, a), 0.01, None),
    "ThresholdedRelu": (lambda x, a, b: ev.where(x > a, x, 0.0), 1.0, None),
    "ScaledTanh": (lambda x, a, b: ev.tanh(x * b) * a, 1.0, 1.0),
    "HardSigmoid": (lambda x, a, b: ev.clip(x * a + b, 0.0, 1.0), 0.2, 0.5),
    "Elu": (lambda x, a, b: ev.elu(x, a), 1.0, None),
    "Softsign": (lambda x, a, b: x / (1.0 + ev.abs(x)), None, None),
    "Softplus": (lambda x, a, b: ev.softplus(x), None, None),
    "Affine": (lambda x, a, b: x * a + b, 1.0, 0.0),
}
RNN_ATTRS = {"activation_alpha": ("floats", None), "activation_beta": ("floats", None),
             "activations": ("strings", None), "clip": ("f", None), "direction": ("s", "forward"),
             "hidden_size": ("i", None), "layout": ("i", 0)}


def _check(at):
    if at["direction"] not in DIRECTIONS:
        return "direction", repr(at["direction"])
    if at["layout"] not in (0, 1):
        return "layout", repr(at["layout"])
    if at.get("input_forget"):
        return "input_forget", repr(at["input_forget"])
    for name in at["activations"] or ():
        if name not in ACTIVATIONS:
            return "activations", f"{name!r} (supported: {', '.join(ACTIVATIONS)})"
    return None


def _activations(b, at, defaults, dirs):
    """One list of activation functions per direction, alpha/beta consumed in order."""
    names = at["activations"] or list(defaults) * dirs
    if len(names) != len(defaults) * dirs:
        b.fail(f"activations {names} must name {len(defaults)} functions per direction")
    alphas, betas = list(at["activation_alpha"] or ()), list(at["activation_beta"] or ())
    fns = []
    for name in names:
        fn, a, c = ACTIVATIONS[name]
        a = alphas.pop(0) if a is not None and alphas else a
        c = betas.pop(0) if c is not None and betas else c
        fns.append(lambda x, fn=fn, a=a, c=c: fn(x, a, c))
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(dirs)]


def _masks(b, lens, steps, batch):
    """(steps, batch, 1): which sequences still run at each step; None when all run to the end."""
    if lens is None:
        return None
    if tuple(lens.shape) != (batch,):
        b.fail(f"sequence_lens {tuple(lens.shape)} must have one length per sequence ({batch})")
    t = np.arange(steps).reshape(steps, 1, 1)
    if known(lens):
        lens = np.asarray(lens)
        if np.all(lens == steps):
            return None
        if lens.min() < 0 or lens.max() > steps:
            b.fail(f"sequence lengths {lens.tolist()} out of range [0, {steps}]")
        return t < lens.reshape(1, batch, 1)
    return ev.less(t.astype(lens.dtype), ev.reshape(lens, (1, batch, 1)))


def _step_inputs(x_t):
    """A step's (projected input, mask or None)."""
    return (x_t[0], x_t[1]) if len(x_t) == 2 else (x_t[0], None)


def _masked(mask, new, old):
    return new if mask is None else ev.where(mask, new, old)


def _recurrent(b, ins, at, gates, states, defaults, make_step):
    """What LSTM, GRU and RNN share: layouts, directions, projections and the outputs."""
    x, w, r = ins[0], ins[1], ins[2]
    bias, lens = opt(ins, 3), opt(ins, 4)
    init = [opt(ins, 5 + k) for k in range(states)]
    if len(x.shape) != 3:
        b.fail(f"X {tuple(x.shape)} must be 3-d")
    if at["layout"]:
        x = ev.transpose(x, (1, 0, 2))
        init = [None if s is None else ev.transpose(s, (1, 0, 2)) for s in init]
    steps, batch, width = x.shape
    dirs = 2 if at["direction"] == "bidirectional" else 1
    hidden = at["hidden_size"] or w.shape[1] // gates
    want = {"W": (dirs, gates * hidden, width), "R": (dirs, gates * hidden, hidden),
            "B": (dirs, 2 * gates * hidden), "initial state": (dirs, batch, hidden)}
    for name, v in [("W", w), ("R", r), ("B", bias)] + [("initial state", s) for s in init]:
        if v is not None and tuple(v.shape) != want[name]:
            b.fail(f"{name} has shape {tuple(v.shape)}, expected {want[name]}")
    b.limit((steps, dirs, batch, hidden))
    masks = _masks(b, lens, steps, batch)
    acts = _activations(b, at, defaults, dirs)
    zeros = np.zeros((batch, hidden), x.dtype)
    ys, finals = [], []
    for d in range(dirs):
        wb = ev.getitem(bias, (d, slice(0, gates * hidden))) if bias is not None else None
        rb = ev.getitem(bias, (d, slice(gates * hidden, None))) if bias is not None else None
        proj = ev.matmul(x, ev.transpose(ev.getitem(w, d)))     # (steps, batch, gates*hidden)
        step, xb = make_step(ev.transpose(ev.getitem(r, d)), wb, rb, acts[d], at["clip"], hidden, d)
        proj = proj if xb is None else proj + xb
        carry0 = tuple(b.node(zeros) if s is None else ev.getitem(s, d) for s in init)
        reverse = at["direction"] == "reverse" or d == 1
        carry, y = _scan(step, carry0, (proj,) if masks is None else (proj, masks), reverse, b.unroll)
        ys.append(y)
        finals.append(carry)
    y = ev.stack(ys, axis=1)                                     # (steps, dirs, batch, hidden)
    outs = [ev.stack([f[k] for f in finals], axis=0) for k in range(states)]
    if at["layout"]:
        y = ev.transpose(y, (2, 0, 1, 3))
        outs = [ev.transpose(o, (1, 0, 2)) for o in outs]
    return (y, *outs)


def _scan(step, carry, xs, reverse, unroll):
    """ev.scan of the step over xs; a single step as plain nodes (no loop for one step)."""
    if xs[0].shape[0] != 1:
        return ev.scan(step, carry, xs, reverse=reverse, unroll=unroll)
    carry, y = step(carry, tuple(x[0] if isinstance(x, np.ndarray) else ev.getitem(x, (0,)) for x in xs))
    return carry, ev.reshape(y, (1,) + tuple(y.shape))


def _clipped(clip):
    return (lambda z: z) if clip is None else (lambda z: ev.clip(z, -clip, clip))


def _cols(z, k, hidden):
    return ev.getitem(z, (slice(None), slice(k * hidden, (k + 1) * hidden)))


@imports("LSTM", attrs=dict(RNN_ATTRS, input_forget=("i", 0)), outputs=3, fold=False,
         check=_check, notes="input_forget=1")
def lstm(b, ins, at):
    peep = opt(ins, 7)

    def make_step(rt, wb, rb, acts, clip, hidden, d):
        f, g, h = acts
        cl = _clipped(clip)
        p = [None] * 3 if peep is None else [ev.getitem(peep, (d, slice(k * hidden, (k + 1) * hidden)))
                                             for k in range(3)]

        def step(carry, x_t):
            (h_prev, c_prev), (xp, mask) = carry, _step_inputs(x_t)
            z = xp + ev.matmul(h_prev, rt)
            i_, o_, f_, c_ = (_cols(z, k, hidden) for k in range(4))   # ONNX's order: i o f c
            if p[0] is not None:
                i_, f_ = i_ + p[0] * c_prev, f_ + p[2] * c_prev
            c_new = f(cl(f_)) * c_prev + f(cl(i_)) * g(cl(c_))
            if p[1] is not None:
                o_ = o_ + p[1] * c_new
            h_new = f(cl(o_)) * h(c_new)
            carry = (_masked(mask, h_new, h_prev), _masked(mask, c_new, c_prev))
            return carry, _masked(mask, h_new, 0.0)
        return step, (None if wb is None else wb + rb)

    if peep is not None and tuple(peep.shape) != (2 if at["direction"] == "bidirectional" else 1,
                                                  3 * (at["hidden_size"] or ins[1].shape[1] // 4)):
        b.fail(f"P has shape {tuple(peep.shape)}, expected (directions, 3 * hidden_size)")
    return _recurrent(b, ins, at, 4, 2, ("Sigmoid", "Tanh", "Tanh"), make_step)


@imports("GRU", attrs=dict(RNN_ATTRS, linear_before_reset=("i", 0)), outputs=2, fold=False,
         check=_check)
def gru(b, ins, at):
    before = bool(at["linear_before_reset"])

    def make_step(rt, wb, rb, acts, clip, hidden, d):
        f, g = acts
        cl = _clipped(clip)
        r_zr = ev.getitem(rt, (slice(None), slice(0, 2 * hidden)))
        r_h = ev.getitem(rt, (slice(None), slice(2 * hidden, None)))
        rb_h = None if rb is None else ev.getitem(rb, slice(2 * hidden, None))
        if rb is None:
            xb = None
        elif before:     # the candidate's recurrent bias stays inside r * (.)
            xb = wb + ev.concat([ev.getitem(rb, slice(0, 2 * hidden)), np.zeros(hidden, rb.dtype)])
        else:
            xb = wb + rb

        def step(carry, x_t):
            (h_prev,), (xp, mask) = carry, _step_inputs(x_t)
            zr = ev.getitem(xp, (slice(None), slice(0, 2 * hidden))) + ev.matmul(h_prev, r_zr)
            z, r = f(cl(_cols(zr, 0, hidden))), f(cl(_cols(zr, 1, hidden)))
            if before:
                hr = ev.matmul(h_prev, r_h)
                hr = hr if rb_h is None else hr + rb_h
                n = g(cl(_cols(xp, 2, hidden) + r * hr))
            else:
                n = g(cl(_cols(xp, 2, hidden) + ev.matmul(r * h_prev, r_h)))
            h_new = n + z * (h_prev - n)                     # (1 - z) * n + z * h
            return (_masked(mask, h_new, h_prev),), _masked(mask, h_new, 0.0)
        return step, xb

    return _recurrent(b, ins, at, 3, 1, ("Sigmoid", "Tanh"), make_step)


@imports("RNN", attrs=RNN_ATTRS, outputs=2, fold=False, check=_check)
def rnn(b, ins, at):
    def make_step(rt, wb, rb, acts, clip, hidden, d):
        (f,) = acts
        cl = _clipped(clip)

        def step(carry, x_t):
            (h_prev,), (xp, mask) = carry, _step_inputs(x_t)
            h_new = f(cl(xp + ev.matmul(h_prev, rt)))
            return (_masked(mask, h_new, h_prev),), _masked(mask, h_new, 0.0)
        return step, (None if wb is None else wb + rb)

    return _recurrent(b, ins, at, 1, 1, ("Tanh",), make_step)
