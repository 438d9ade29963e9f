"""Graph-level optimizations on the compiler IR. Each pass rewrites Vals in place
and reports what it did; the user's graph is never touched.

Nothing here recognises how a formula is spelled: the fused gradients of the kernel
ops (unary_grad) and of cross-entropy (xent_grad) are built by their VJPs directly
(ops/internal.py).

batch_siblings  k independent copies of one op over rows -> one op (batching.py)
merge_sums    a sum of many matmuls / axis-0 sums / embedding scatters of the
              same shape (weight gradients accumulated over the steps of an
              unrolled loop) -> one op over the concatenated operands
fusion.fuse   every group of elementwise ops over one shape -> one generated C kernel
              (fusion.py; last, on the C backend with a C compiler, no watches)
"""
import math

from . import fusion, ir
from .batching import batch_siblings, stack_rows
from .ir import Builder

MIN_TERMS = 3   # below this a merge saves less than the concatenations cost


def _single(v, keep):
    return len(v.users) == 1 and id(v) not in keep


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype


# -- sums of per-step terms ------------------------------------------------------------------

def _terms(v, keep):
    """Flatten a tree of same-shaped adds rooted at v into its terms."""
    out, stack = [], list(reversed(v.ins))
    while stack:
        x = stack.pop()
        if x.kind == "op" and x.op == "add" and _same(x, v) and _single(x, keep):
            stack.extend(reversed(x.ins))
        else:
            out.append(x)
    return out


def _signature(t):
    """How a term can merge with others: a hashable key, or None."""
    if t.kind != "op":
        return None
    if t.op == "matmul" and len(t.ins[0].shape) == 2 and len(t.ins[1].shape) == 2:
        return ("matmul", t.shape, t.dtype.str)
    if t.op == "sum" and not t.params["keepdims"] and t.ins[0].shape[len(t.params["axis"]):] == t.shape \
            and t.params["axis"] == tuple(range(len(t.params["axis"]))):
        return ("sum", t.shape, t.dtype.str)
    if t.op == "take_grad" and t.params["axis"] == 0:
        return ("take_grad", t.shape, t.dtype.str, t.ins[1].dtype.str)
    if t.op == "getitem_grad":
        cut = _slice_on_axis(t.params["index"], t.shape)
        if cut is not None:
            return ("getitem_grad", t.shape, t.dtype.str, cut[0])
    return None


def _slice_on_axis(index, shape):
    """(axis, start, stop) if index selects a unit-step range of one axis and all of
    every other: full slices but for one unit-step slice, or one integer (the range
    i..i+1, that axis dropped, as x[t] picks a time step). Else None."""
    if len(index) > len(shape):
        return None
    cut = []
    for a, i in enumerate(index):
        if type(i) is int:
            if not -shape[a] <= i < shape[a]:
                return None
            cut.append((a, i % shape[a], i % shape[a] + 1))
        elif type(i) is slice:
            if i != slice(None):
                start, stop, step = i.indices(shape[a])
                if step != 1:
                    return None
                cut.append((a, start, stop))
        else:
            return None
    return cut[0] if len(cut) == 1 else None


def _untransposed(b, x):
    """A with x == A.T, or None."""
    if x.op == "transpose" and tuple(x.params["axes"]) == (1, 0):
        return x.ins[0]
    if x.kind == "const" and len(x.shape) == 2:
        return b.const(x.value.T)
    return None


def _concat(b, parts, axis):
    if axis == 0:
        return stack_rows(b, parts)
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    return b.op("concat", parts, tuple(shape), parts[0].dtype, axis=axis)


def _transpose(b, x):
    return b.op("transpose", [x], x.shape[::-1], x.dtype, axes=(1, 0))


def _merge_matmuls(b, terms, shape, dtype):
    """sum_i X_i @ Y_i == concat(X_i, axis=1) @ concat(Y_i, axis=0)."""
    xs = [t.ins[0] for t in terms]
    ys = [t.ins[1] for t in terms]
    bases = [_untransposed(b, x) for x in xs]
    if all(a is not None for a in bases):     # X_i = A_i.T: stack the A_i's rows instead
        left = _transpose(b, _concat(b, bases, 0))
    else:
        left = _concat(b, xs, 1)
    cols = [_untransposed(b, y) for y in ys]
    if all(c is not None for c in cols):
        right = _transpose(b, _concat(b, cols, 1))
    else:
        right = _concat(b, ys, 0)
    return b.op("matmul", [left, right], shape, dtype)


def _merge_sums0(b, terms, shape, dtype):
    """sum_i sum(G_i, leading axes) == sum(concat(G_i), axis=0)."""
    parts = []
    for t in terms:
        g = t.ins[0]
        lead = math.prod(g.shape[:len(g.shape) - len(shape)])
        parts.append(b.reshape(g, (lead,) + shape))
    return b.op("sum", [_concat(b, parts, 0)], shape, dtype, axis=(0,), keepdims=False)


def _merge_take_grads(b, terms, shape, dtype):
    gs, idx = [], []
    for t in terms:
        g, i = t.ins
        n = math.prod(i.shape)
        gs.append(b.reshape(g, (n,) + shape[1:]))
        idx.append(b.reshape(i, (n,)))
    return b.op("take_grad", [_concat(b, gs, 0), _concat(b, idx, 0)], shape, dtype, axis=0, shape=shape)


def _merge_getitem_grads(b, terms, shape, dtype):
    """Gradients of slices that tile an axis, summed, are their concatenation."""
    cuts = sorted((_slice_on_axis(t.params["index"], shape), i) for i, t in enumerate(terms))
    axis = cuts[0][0][0]
    edges = [c[0][1:] for c in cuts]
    if edges[0][0] != 0 or edges[-1][1] != shape[axis] or any(a[1] != b_[0] for a, b_ in zip(edges, edges[1:])):
        return None
    parts = []
    for _, i in cuts:
        g = terms[i].ins[0]
        if type(terms[i].params["index"][axis]) is int:     # x[t]: give back t's axis
            g = b.reshape(g, shape[:axis] + (1,) + shape[axis + 1:])
        parts.append(g)
    return _concat(b, parts, axis)


MERGERS = {"matmul": _merge_matmuls, "sum": _merge_sums0, "take_grad": _merge_take_grads,
           "getitem_grad": _merge_getitem_grads}
MIN_TERMS_OF = {"getitem_grad": 2}


def merge_sums(live, keep):
    merged = 0
    memo = {}
    for v in live:
        if v.kind != "op" or v.op != "add" or any(x.shape != v.shape for x in v.ins):
            continue
        if len(v.users) == 1 and v.users[0].op == "add" and _same(v.users[0], v) and id(v) not in keep:
            continue    # an inner add: its tree is handled from the root
        terms = _terms(v, keep)
        groups = {}
        for t in terms:
            sig = _signature(t)
            if sig is not None:
                groups.setdefault(sig, []).append(t)
        groups = {k: ts for k, ts in groups.items() if len(ts) >= MIN_TERMS_OF.get(k[0], MIN_TERMS)}
        b = Builder(v.key, memo)
        new = {}
        for k, ts in groups.items():
            m = MERGERS[k[0]](b, ts, v.shape, v.dtype)
            if m is not None:
                new[k] = m
        if not new:
            continue
        grouped = {id(t) for k in new for t in groups[k]}
        rest = [t for t in terms if id(t) not in grouped]
        parts = list(new.values()) + rest
        acc = parts[0]
        for p in parts[1:-1]:
            acc = b.op("add", [acc, p], v.shape, v.dtype)
        if len(parts) == 1:
            v.op, v.ins, v.params = acc.op, acc.ins, acc.params
        else:
            v.op, v.ins, v.params = "add", [acc, parts[-1]], {}
        merged += sum(len(groups[k]) for k in new)
    return merged


def optimize(live, roots, keep, fuse=False):
    """Run the passes; returns (live Vals, notes for the disassembly). fuse: turn every
    elementwise group into one generated kernel (fusion.py)."""
    notes = []
    n, live = batch_siblings(live, roots)
    if n:
        notes.append(f"batched {n} independent per-step ops into single ops over stacked rows")
    n = merge_sums(live, keep)
    if n:
        notes.append(f"merged {n} summed terms (per-step gradients) into single ops")
        live = ir.live_vals(roots)
    # NOTE: last, so that the passes above still see the elementwise ops (merge_sums' adds).
    if fuse:
        live, note = fusion.fuse(live, roots, keep)
        if note:
            notes.append(note)
    return live, notes
