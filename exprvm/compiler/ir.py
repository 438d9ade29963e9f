"""The compiler's own IR: a private copy of the graph that passes may rewrite.

The user's graph is never changed by compiling it. Each Val stands for one
value; several graph nodes may share a Val (an identity op, `x * 1` from a
gradient seed) and a Val may stand for no node at all (values the optimizer
introduced, such as a concatenation of per-step operands).
"""
import heapq
import math
import operator

import numpy as np

from ..errors import CompileError

from ..core import DTYPE_TYPES, LEAF_OPS, OPS

class Val:
    __slots__ = ("key", "kind", "op", "ins", "params", "shape", "dtype", "value", "nodes", "users", "rid")

    def __init__(self, key, kind, op=None, ins=(), params=None, shape=(), dtype=None, value=None):
        self.key = key              # sort key: a topological order of the IR
        self.kind = kind            # "input", "param", "const" or "op"
        self.op = op
        self.ins = list(ins)
        self.params = params if params is not None else {}
        self.shape = shape if type(shape) is tuple else tuple(shape)
        self.dtype = dtype if type(dtype) in DTYPE_TYPES else np.dtype(dtype)
        self.value = value          # const Vals: the array
        self.nodes = []             # graph nodes this Val computes
        self.users = []
        self.rid = -1               # register, once lowered

    def __repr__(self):
        return f"<Val {self.kind} {self.op} {self.shape} key={self.key}>"

    @property
    def node(self):
        return self.nodes[0] if self.nodes else None

    @property
    def const_value(self):
        """The array of a constant Val, else None (what Op.identity rules look at)."""
        return self.value if self.kind == "const" else None


def simplify(node, ins):
    """An existing Val equal to node's value, or None: the op record's exact identities
    (Op.identity: x * 1, x + 0, a reshape to the same shape, ...)."""
    identity = node.opdef.identity
    if identity is None:
        return None
    pos = identity(ins, node.shape, node.dtype, node.params)
    return None if pos is None else ins[pos]


def fold(node, ins):
    """A const Val for an op whose inputs are all constant, or None."""
    if not ins:
        return None
    for v in ins:       # NOTE: a loop, not any(): this runs for every node compiled
        if v.kind != "const":
            return None
    if "rng" in node.params:
        return None
    if node.opdef.multiple_results or node.op == "result":     # a loop runs on the tape
        return None
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(node.opdef.impl(*[v.value for v in ins], **node.params))
    except Exception:   # NOTE: a constant that fails (bad index...) fails again at run time, named
        return None
    if value.shape != node.shape:
        return None
    if value.dtype != node.dtype:
        value = value.astype(node.dtype)
    if value.flags.writeable:
        value.setflags(write=False)
    return Val((node.id, 0), "const", shape=node.shape, dtype=node.dtype, value=value)


def build(order, identities=True, cuts=()):
    """Vals for the nodes in `order` (topological). Returns {node id: Val}. identities=False
    keeps ops that simplify() would drop (so that every node keeps a value). Nodes in
    `cuts` are inputs, whatever computes them (a loop body's residuals).

    A node with several results (a loop) becomes one Val of packed bytes (its results
    side by side, packed_layout), and each projection a view of its bytes (op unpack)."""
    vals = {}
    cut = {id(n) for n in cuts}
    for n in order:
        if n.op in LEAF_OPS or (cut and id(n) in cut):
            kind = "input" if id(n) in cut else n.op
            v = Val((n.id, 0), kind, shape=n.shape, dtype=n.dtype,
                    value=n.value if kind == "const" else None)
        elif n.opdef.multiple_results:
            _, size = packed_layout(n.params["results"])
            v = Val((n.id, 0), "op", n.op, [vals[x.id] for x in n.inputs], n.params, (size,), np.uint8)
        elif n.op == "result":
            src = n.inputs[0]
            offsets, _ = packed_layout(src.params["results"])
            k = n.params["index"]
            v = Val((n.id, 0), "op", "unpack", [vals[src.id]],
                    {"offset": offsets[k], "shape": n.shape, "dtype": n.dtype.str}, n.shape, n.dtype)
        else:
            ins = [vals[x.id] for x in n.inputs]
            v = (simplify(n, ins) if identities else None) or fold(n, ins)
            if v is None:
                v = Val((n.id, 0), "op", n.op, ins, n.params, n.shape, n.dtype)
        v.nodes.append(n)
        vals[n.id] = v
    return vals


def packed_layout(results):
    """(byte offset of each result, total bytes) of a multi-result value packed into one
    buffer: each result starts on a 64-byte boundary (cache lines; vector loads)."""
    offsets, top = [], 0
    for shape, dt in results:
        top = -(-top // 64) * 64
        offsets.append(top)
        top += math.prod(shape) * np.dtype(dt).itemsize
    return offsets, max(top, 1)


def release(*groups):
    """Break the IR's reference cycles once a compile is done with it: a Val's users read
    it, so each Val and its readers hold each other, and the whole IR (dead Vals of the
    rewrites included) would wait for the cyclic garbage collector, whose scan of it cost
    more than the rest of the freeing (a sixth of a big graph's compile). Every Val met
    from the groups through inputs and users loses its users (None: no use after this)."""
    stack = [v for group in groups for v in group]
    while stack:
        v = stack.pop()
        users = v.users
        if users is None:       # met before (a Val is met once for each edge to it)
            continue
        v.users = None
        stack += users
        stack += v.ins


def live_vals(targets):
    """Vals the targets depend on, in topological order, with users filled in
    (dead-code elimination)."""
    seen = set(targets)
    vals = list(seen)
    for v in vals:
        v.users = []
    stack = list(vals)
    while stack:                    # one pass: each Val is met by its first reader
        v = stack.pop()
        for x in v.ins:
            if x in seen:
                x.users.append(v)
            else:
                seen.add(x)
                x.users = [v]
                vals.append(x)
                stack.append(x)
    return toposort(vals)


def toposort(vals):
    """Kahn's algorithm, smallest key first: a valid order that follows the graph's own.

    The Vals are walked in key order; one whose inputs are not all out yet waits, and is
    let out (smallest key first) as soon as its last input is: the order Kahn's algorithm
    with a heap of every ready Val gives, with a heap only of the Vals that waited (the
    key order is topological but where a rewrite made a Val read later ones)."""
    order = sorted(vals, key=_key)
    out, done = [], set()
    waiting, need, ready = {}, {}, []

    def emit(v):
        out.append(v)
        done.add(v)
        for w in waiting.pop(v, ()):
            need[w] -= 1
            if not need[w]:
                heapq.heappush(ready, (w.key, len(out), w))

    for v in order:
        if not done.issuperset(v.ins):
            missing = 0
            for x in v.ins:
                if x not in done:
                    missing += 1
                    waiting.setdefault(x, []).append(v)
            need[v] = missing
            continue
        if not waiting:                 # NOTE: the usual case, inline
            out.append(v)
            done.add(v)
            continue
        emit(v)
        while ready:                    # waiting Vals have smaller keys than any still ahead
            emit(heapq.heappop(ready)[2])
    if len(out) != len(vals):
        raise CompileError("the optimized graph has a cycle (compiler bug)")
    return out


_key = operator.attrgetter("key")


class Builder:
    """Makes new op Vals for rewrites, keyed just before the Val they replace.

    Identical requests (same op, inputs and params) return the same Val, so two
    rewrites that need one concatenation share it.
    """

    def __init__(self, key, memo=None):
        self.base = key[0]
        self.sub = key[1] - 10_000
        self.memo = {} if memo is None else memo

    def op(self, name, ins, out_shape, out_dtype, /, **params):
        # NOTE: positional-only, so that an op's own params (one_hot's dtype) pass through
        assert name in OPS, name
        key = (name, tuple(id(x) for x in ins), repr(sorted(params.items())))
        hit = self.memo.get(key)
        if hit is not None:
            return hit[0]
        self.sub += 1
        v = Val((self.base, self.sub), "op", name, ins, params, out_shape, out_dtype)
        self.memo[key] = (v, ins)       # NOTE: holding ins keeps their ids unique
        return v

    def const(self, value):
        self.sub += 1
        value = np.ascontiguousarray(value)
        value.setflags(write=False)
        return Val((self.base, self.sub), "const", shape=value.shape, dtype=value.dtype, value=value)

    def reshape(self, x, shape):
        return x if x.shape == tuple(shape) else self.op("reshape", [x], shape, x.dtype, shape=tuple(shape))
