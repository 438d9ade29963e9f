"""Hoisting: the work of a scan's step that does not need the carry runs once, batched
over all steps, outside the loop (PyTensor's Scan is criticised for keeping it inside).

Before the loop: body values computed from the x rows and captured nodes only -- the
input projection x_t @ W_x + b, an embedding's rows, a one-hot -- are computed over the
whole xs at once (one tall product: the rows of every step as one matrix) and read by
the loop row by row as new xs; values computed from captured nodes only (W_x + b) are
computed once and read as new captures.

After the loop: a summed y -- a step's contribution to a captured node's gradient, which
the loop would add up step by step -- whose operands are available as stacks (x rows,
hoisted values, or body values the loop is asked to stack) is computed once over the
stacks: sum_t h_t^T @ dz_t as one (steps * batch) product, sum_t dz_t as one sum. The
unrolled tape gets the same by batching its per-step products (optimize.merge_sums).

Where the number of steps is given at run time, rows past it are computed too: a value
that could fail on them (a gather by ids) is not hoisted, and a summed y is sunk only
when one factor is a stack the loop fills (its rows past the length are zeros).
"""
import numpy as np

from ..core.body import Body
from . import ir
from .ir import Builder

def hoist_scans(live, roots):
    """Hoist every scan of the IR (see the module docstring). Returns the live Vals (what
    the roots need, in a topological order)."""
    changed = False
    for v in list(live):
        if v.kind == "op" and v.op == "scan":
            changed = _Hoist(v).run() or changed
    return ir.live_vals(roots) if changed else live


class _Hoist:
    def __init__(self, v):
        self.v = v
        p = v.params
        self.body = p["body"]
        self.nc, self.nx = p["n_carry"], p["n_x"]
        self.rows, self.steps = p["rows"], p["steps"]
        self.partial = self.steps is None or self.steps != self.rows    # rows past the length
        ins = self.body.inputs
        self.n_cap = len(ins) - self.nc - self.nx
        self.before = Builder(v.key)
        kind = {}
        for k, leaf in enumerate(ins):
            kind[leaf.id] = "carry" if k < self.nc else ("row" if k < self.nc + self.nx else "shared")
        for n in self.body.order:
            if n.opdef is None:
                kind[n.id] = "shared"
            elif n.opdef.multiple_results or any(kind[x.id] == "carry" for x in n.inputs):
                kind[n.id] = "carry"
            elif any(kind[x.id] == "row" for x in n.inputs):
                kind[n.id] = "row"
            else:
                kind[n.id] = "shared"
        self.kind = kind
        self.outer = {}         # body node id -> (outer Val, per step?)
        for k, leaf in enumerate(ins[:self.nc + self.nx + self.n_cap]):
            if k >= self.nc:
                self.outer[leaf.id] = (v.ins[k], k < self.nc + self.nx)

    def run(self):
        """Rewrite the scan; True when anything moved out of its loop."""
        new_xs, new_caps = self._before()
        sunk = self._after(new_xs)
        if not new_xs and not new_caps and not sunk:
            return False
        self._rebuild(new_xs, new_caps, sunk)
        return True

    # -- before the loop ---------------------------------------------------------------
    def _before(self):
        """Body values to read from outside: (per-step [(node, stacked Val)], per-run [...])."""
        body, kind = self.body, self.kind
        readers = {}
        for n in body.order:
            for x in n.inputs:
                readers.setdefault(x.id, []).append(n)
        xs, caps = [], []
        for n in body.order:
            if n.opdef is None or kind[n.id] == "carry":
                continue
            # NOTE: a value only output (a y) is not worth it: the loop would copy it per step
            wanted = any(kind[r.id] == "carry" for r in readers.get(n.id, ()))
            if not wanted or n.opdef.view:      # views are free where they are
                continue
            got = self._translate(n)
            if got is None:
                continue
            (xs if got[1] else caps).append((n, got[0]))
        return xs, caps

    def _translate(self, n):
        """The outer Val of body node n: its stack over the steps (per step) or its one
        value (shared); None when it cannot be computed outside."""
        hit = self.outer.get(n.id)
        if hit is not None or n.id in self.outer:
            return hit
        if n.opdef is None:                     # a constant (a carry is never asked for)
            got = (self.before.const(n.value), False) if n.op == "const" else None
        else:
            ins = [self._translate(x) for x in n.inputs]
            got = None if any(i is None for i in ins) else self._stacked_op(n, ins)
        self.outer[n.id] = got
        return got

    def _stacked_op(self, n, ins):
        b, rows = self.before, self.rows
        op = n.opdef
        per = [s for _, s in ins]
        vals = [x for x, _ in ins]
        if not any(per):                        # computed from shared values: once
            return b.op(n.op, vals, n.shape, n.dtype, **n.params), False
        shape = (rows,) + tuple(n.shape)
        if op.elementwise and not op.variadic:
            if all(x.shape == n.shape for x, s in zip(n.inputs, per) if s) and \
                    all(len(x.shape) <= len(n.shape) for x, s in zip(n.inputs, per) if not s):
                return b.op(n.op, vals, shape, n.dtype, **n.params), True
            return None
        if n.op == "matmul" and per == [True, False] and len(n.inputs[1].shape) == 2:
            a = vals[0]
            if len(n.inputs[0].shape) == 2:     # the rows of every step as one matrix
                flat = b.reshape(a, (rows * n.inputs[0].shape[0], n.inputs[0].shape[1]))
                prod = b.op("matmul", [flat, vals[1]], (flat.shape[0], n.shape[-1]), n.dtype)
                return b.reshape(prod, shape), True
            if len(n.inputs[0].shape) == 1:
                return b.op("matmul", vals, shape, n.dtype), True
            return None
        if n.op == "matmul" and per == [False, True] and len(n.inputs[0].shape) == 2:
            w, xs = vals
            if len(n.inputs[1].shape) == 1:     # W @ x_t for every t: X @ W^T
                wt = b.op("transpose", [w], (w.shape[1], w.shape[0]), w.dtype, axes=(1, 0))
                return b.op("matmul", [xs, wt], shape, n.dtype), True
            if len(n.inputs[1].shape) == 2:     # a stack of products with one matrix
                return b.op("matmul", vals, shape, n.dtype), True
            return None
        if n.op == "take" and per == [False, True] and n.params.get("axis") == 0 and not self.partial:
            return b.op("take", vals, shape, n.dtype, **n.params), True
        if n.op in ("one_hot", "astype") and per == [True]:
            return b.op(n.op, vals, shape, n.dtype, **n.params), True
        return None

    # -- after the loop ------------------------------------------------------------------
    def _after(self, new_xs):
        """Summed ys to compute outside: [(output position, unpack Val, builder fn)]."""
        p, body, nc = self.v.params, self.body, self.nc
        hoisted = {n.id: val for n, val in new_xs}
        stacked = {o.id: nc + j for j, o in enumerate(body.outputs[nc:]) if not p["summed"][j]}
        users = {}
        offsets, _ = ir.packed_layout(p["results"])
        where = {off: k for k, off in enumerate(offsets)}
        for u in self.v.users:
            users.setdefault(where[u.params["offset"]], []).append(u)
        out, sunk = [], {}
        for j, s in enumerate(p["summed"]):
            pos = nc + j
            if len(users.get(pos, ())) != 1:
                continue
            o = body.outputs[pos]
            if s:
                plan = self._sink_plan(o, hoisted, stacked, sunk)
            elif self.kind.get(o.id) == "row":
                # a stacked y that needs no carry (a residual such as the one-hot rows)
                got = self._translate(o)
                plan = ("stack", [("x", got[0])], [o], o) if got is not None and got[1] else None
            else:
                plan = None
            if plan is not None:
                out.append((pos, users[pos][0], plan))
                sunk[o.id] = users[pos][0]
        return out

    def _stack_of(self, n, hoisted, stacked):
        """How body node n's stack is had after the loop: ("x", Val), ("y", position) or
        ("new", node) (the loop is asked to stack it); with whether its rows past the
        length are zeros. None when it cannot be stacked."""
        k = next((k for k, leaf in enumerate(self.body.inputs[self.nc:self.nc + self.nx])
                  if leaf is n), None)
        if k is not None:
            return ("x", self.v.ins[self.nc + k]), False
        if n.id in hoisted:
            return ("x", hoisted[n.id]), False
        if n.id in stacked:
            return ("y", stacked[n.id]), True
        if self.kind.get(n.id) == "carry" and n.opdef is not None and not n.opdef.multiple_results:
            return ("new", n), True
        return None

    def _sink_plan(self, s, hoisted, stacked, sunk):
        """(kind, [stack sources], factors, s) for a summed y computed from stacks, or None.
        A sum of another summed y's node is that y's sum summed (linearity): no stack."""
        if s.opdef is None:
            return None
        if s.op == "sum" and s.inputs[0].id in sunk:
            return "sum", [("sunk", sunk[s.inputs[0].id])], [s.inputs[0]], s
        if s.op == "matmul" and len(s.shape) == 2 and s.inputs[0].op == "transpose" \
                and tuple(s.inputs[0].params["axes"]) == (1, 0):
            factors = [s.inputs[0].inputs[0], s.inputs[1]]
            kind = "matmul"
        elif s.op == "outer":
            factors, kind = list(s.inputs), "outer"
        elif s.op == "sum" and not s.params["keepdims"] \
                and tuple(s.params["axis"]) == tuple(range(len(s.params["axis"]))):
            factors, kind = [s.inputs[0]], "sum"
        else:
            return None
        srcs = [self._stack_of(f, hoisted, stacked) for f in factors]
        if any(x is None for x in srcs):
            return None
        if self.partial and not any(zero for _, zero in srcs):
            return None
        return kind, [src for src, _ in srcs], factors, s

    # -- the new loop --------------------------------------------------------------------
    def _rebuild(self, new_xs, new_caps, sunk):
        v, p, body, nc, nx = self.v, self.v.params, self.body, self.nc, self.nx
        ins = body.inputs
        sunk_pos = {pos for pos, _, _ in sunk}
        extra = []
        for _, _, (_, srcs, _, _) in sunk:
            for kind, x in srcs:
                if kind == "new" and all(x is not e for e in extra):
                    extra.append(x)
        n_out = len(body.outputs)
        keep = [k for k in range(n_out) if k not in sunk_pos]
        outputs = [body.outputs[k] for k in keep] + extra
        summed = tuple(p["summed"][k - nc] for k in keep[nc:]) + (False,) * len(extra)
        inputs = (list(ins[:nc + nx]) + [n for n, _ in new_xs] + list(ins[nc + nx:])
                  + [n for n, _ in new_caps])
        results = (tuple(p["results"][k] for k in keep)
                   + tuple(((self.rows,) + tuple(x.shape), x.dtype.str) for x in extra))
        n_cap_old = self.n_cap
        v.ins = (list(v.ins[:nc + nx]) + [val for _, val in new_xs] + list(v.ins[nc + nx:nc + nx + n_cap_old])
                 + [val for _, val in new_caps] + list(v.ins[nc + nx + n_cap_old:]))
        old_offsets, _ = ir.packed_layout(p["results"])
        rebuilt = Body(body.graph, inputs, outputs, body.name, body.site, body.remat)
        rebuilt.visible = sum(1 for k in keep if k < body.visible)
        v.params = dict(p, body=rebuilt,
                        n_x=nx + len(new_xs), summed=summed, results=results)
        offsets, size = ir.packed_layout(results)
        v.shape = (size,)
        moved = {old_offsets[k]: offsets[i] for i, k in enumerate(keep)}
        for u in v.users:
            off = u.params["offset"]
            if off in moved:
                u.params = dict(u.params, offset=moved[off])
        for x in v.ins:
            if v not in x.users:
                x.users.append(v)
        # the sunk outputs: each projection becomes the batched computation itself
        for pos, u, (kind, srcs, factors, s) in sunk:
            after = Builder(u.key)
            stacks = []
            for (src, x), f in zip(srcs, factors):
                if src in ("x", "sunk"):
                    stacks.append(x)
                    continue
                k = keep.index(x) if src == "y" else len(keep) + extra.index(x)
                shape = (self.rows,) + tuple(f.shape)
                stacks.append(after.op("unpack", [v], shape, f.dtype, offset=offsets[k], shape=shape,
                                       dtype=f.dtype.str))
            for st in stacks:
                if st.kind == "op" and st.op == "unpack":
                    v.users.append(st)
            if kind == "stack" and self.partial and pos < body.visible:
                # rows past the length are zeros (a residual's are never read)
                stacks = [self._rows_run(after, stacks[0])]
            _sunk(after, u, kind, stacks, factors, s, self.rows)
            v.users = [w for w in v.users if w is not u]


    def _rows_run(self, b, stack):
        """stack with its rows past the number of steps zeroed (as the loop leaves them)."""
        p = self.v.params
        shape = (self.rows,) + (1,) * (len(stack.shape) - 1)
        index = b.const(np.arange(self.rows, dtype=np.int64).reshape(shape))
        n = self.v.ins[-1] if p["steps"] is None else b.const(np.array(p["steps"], np.int64))
        if n.dtype != index.dtype:
            n = b.op("astype", [n], (), index.dtype, dtype=index.dtype.str)
        ran = b.op("lt", [index, n], shape, np.dtype(bool))
        zero = b.const(np.zeros((), stack.dtype))
        return b.op("where", [ran, stack, zero], stack.shape, stack.dtype)


def _sunk(b, u, kind, stacks, factors, s, rows):
    """Turn projection u into the batched computation of summed output s."""
    if kind == "stack":         # the stack itself, computed before the loop
        u.op, u.ins, u.params = "reshape", [stacks[0]], {"shape": u.shape}
    elif kind == "sum" and stacks[0].shape == tuple(factors[0].shape):     # of a summed y
        u.op, u.ins, u.params = "sum", [stacks[0]], dict(s.params)
    elif kind == "sum":
        (st,) = stacks
        axis = (0,) + tuple(a + 1 for a in s.params["axis"])
        u.op, u.ins, u.params = "sum", [st], {"axis": axis, "keepdims": False}
    else:
        a, c = stacks
        pa, pc = factors
        if kind == "matmul":
            a = b.reshape(a, (rows * pa.shape[0], pa.shape[1]))
            c = b.reshape(c, (rows * pc.shape[0], pc.shape[1]))
        at = b.op("transpose", [a], (a.shape[1], a.shape[0]), a.dtype, axes=(1, 0))
        u.op, u.ins, u.params = "matmul", [at, c], {}
    for x in u.ins:
        x.users.append(u)
    u.kind = "op"
    assert kind == "stack" or (u.shape == tuple(s.shape) and np.dtype(u.dtype) == s.dtype)
