"""The scan op: a step function applied along axis 0 of its xs, threading a carry.

Inputs, in order: the carries' initial values (n_carry), the xs (n_x, scanned along
axis 0), the outer nodes the body captured, and last, when the number of steps is given
at run time, an int64 scalar length. Params:

    body      the traced step (core.body.Body): inputs carries + x rows + captures,
              outputs new carries + ys (one row each)
    n_carry, n_x
    rows      the ys' row count (the static maximum number of steps)
    steps     the number of steps when static, or None: the length input gives it
    reverse   the steps run from the last row to the first
    summed    per y: summed over the steps instead of stacked (a gradient body's
              per-step contributions to a captured node's gradient)
    results   (shape, dtype) per result: carries, then ys

Value: a tuple (final carries..., ys...). Rows of stacked ys past the number of steps
are zeros. The VJP (vjp_all) is a reverse scan over the residuals a forward scan stores
(the same body, asked for more outputs); see scan_grad.py.
"""
import numpy as np

from ...core import defop
from ...errors import FeedError, ShapeError
from .common import tuple_rule
from .scan_grad import scan_vjp


def split_inputs(args, body, n_carry, n_x, steps):
    """(carries, xs, captures, length) of a scan's inputs."""
    n_cap = len(body.inputs) - n_carry - n_x
    carries = args[:n_carry]
    xs = args[n_carry:n_carry + n_x]
    caps = args[n_carry + n_x:n_carry + n_x + n_cap]
    length = args[-1] if steps is None else None
    return carries, xs, caps, length


def check_length(value, rows, what="scan"):
    """The number of steps a length input gives: an integer in [0, rows], else FeedError."""
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise FeedError(f"{what}: the length must be an integer scalar, got {arr.dtype.name} {arr.shape}")
    n = int(arr)
    if not 0 <= n <= rows:
        raise FeedError(f"{what}: length {n} is outside [0, {rows}] (the scanned rows)")
    return n


def row_order(n, rows, reverse):
    """The rows the steps visit, in order: 0..n-1, or n-1..0 for a reverse scan."""
    return range(n - 1, -1, -1) if reverse else range(n)


def _scan_rule(*inputs, body, n_carry, n_x, rows, steps, reverse, summed, results):
    carries, xs, caps, length = split_inputs(inputs, body, n_carry, n_x, steps)
    leaves = body.inputs
    for k, (x, leaf) in enumerate(zip(carries, leaves[:n_carry])):
        if x.shape != leaf.shape or x.dtype != leaf.dtype:
            raise ShapeError(f"carry {k}: {x.shape} {x.dtype.name}, the body takes {leaf.shape} {leaf.dtype.name}")
    for k, (x, leaf) in enumerate(zip(xs, leaves[n_carry:n_carry + n_x])):
        if x.shape != (rows,) + leaf.shape or x.dtype != leaf.dtype:
            raise ShapeError(f"xs {k}: {x.shape} {x.dtype.name}, the body takes rows {leaf.shape} "
                             f"{leaf.dtype.name} of {rows}")
    for k, (x, leaf) in enumerate(zip(caps, leaves[n_carry + n_x:])):
        if x.shape != leaf.shape or x.dtype != leaf.dtype:
            raise ShapeError(f"captured {x.label}: {x.shape} {x.dtype.name}, the body took {leaf.shape}")
    if length is not None and (length.shape != () or length.dtype.kind not in "iu"):
        raise ShapeError(f"the length must be an integer scalar node, got {length.shape} {length.dtype.name}")
    if steps is not None and not 0 <= steps <= rows:
        raise ShapeError(f"{steps} steps over {rows} rows")
    return tuple_rule(results=results)


def _start(args, body, n_carry, n_x, rows, steps, summed, results):
    carries, xs, caps, length = split_inputs(args, body, n_carry, n_x, steps)
    n = steps if steps is not None else check_length(length, rows)
    ys = []
    for j, s in enumerate(summed):
        shape, dt = results[n_carry + j]
        ys.append(np.zeros(shape, dt))
    return list(carries), xs, list(caps), n, ys


def _step(body, carries, xs, caps, t, n_carry, ys, summed, tapes=None):
    env = body.evaluate(carries + [x[t] for x in xs] + caps, tapes)
    outs = body.outputs_of(env)
    for j, y in enumerate(outs[n_carry:]):
        if summed[j]:
            ys[j] += y
        else:
            ys[j][t, ...] = y
    return outs[:n_carry], env


def _finish(carries, ys, results):
    out = [np.array(c, dtype=np.dtype(results[k][1]), copy=True) for k, c in enumerate(carries)]
    return tuple(out + ys)


def scan_impl(*args, body, n_carry, n_x, rows, steps, reverse, summed, results):
    """The numpy reference: a Python loop walking the body once per step."""
    carries, xs, caps, n, ys = _start(args, body, n_carry, n_x, rows, steps, summed, results)
    for t in row_order(n, rows, reverse):
        carries, _ = _step(body, carries, xs, caps, t, n_carry, ys, summed)
    return _finish(carries, ys, results)


def scan_record(*args, body, n_carry, n_x, rows, steps, reverse, summed, results):
    """scan_impl keeping every step's values, for scan_backprop."""
    carries, xs, caps, n, ys = _start(args, body, n_carry, n_x, rows, steps, summed, results)
    tape = []
    for t in row_order(n, rows, reverse):
        tapes = {}
        carries, env = _step(body, carries, xs, caps, t, n_carry, ys, summed, tapes)
        tape.append((t, env, tapes))
    return _finish(carries, ys, results), tape


def scan_backprop(tape, gs, ans, *args, body, n_carry, n_x, rows, steps, reverse, summed, results):
    """Run-time VJP over the recorded steps, last step first."""
    carries, xs, caps, _ = split_inputs(args, body, n_carry, n_x, steps)
    dcarry = list(gs[:n_carry])
    gys = gs[n_carry:]
    dxs = [np.zeros(np.shape(x), x.dtype) if x.dtype.kind == "f" else None for x in xs]
    dcaps = [np.zeros(np.shape(c), c.dtype) if c.dtype.kind == "f" else None for c in caps]
    n_in = n_carry + n_x
    for t, env, tapes in reversed(tape):
        seeds = dcarry + [None if g is None else (g if summed[j] else g[t]) for j, g in enumerate(gys)]
        grads = body.backprop(env, tapes, seeds)
        dcarry = grads[:n_carry]
        for i, gx in enumerate(grads[n_carry:n_in]):
            if gx is not None and dxs[i] is not None:
                dxs[i][t] += gx
        for i, gc in enumerate(grads[n_in:]):
            if gc is not None and dcaps[i] is not None:
                dcaps[i] += gc
    dinit = [None if d is None else np.array(d, dtype=c.dtype, copy=True) for d, c in zip(dcarry, carries)]
    return dinit + dxs + dcaps + ([] if steps is not None else [None])


defop("scan", scan_impl, _scan_rule, multiple_results=True, vjp_all=scan_vjp, record=scan_record,
      backprop=scan_backprop, int_args=(),
      doc="A step function scanned along axis 0 (see ev.scan).")
