"""How a TapeMachine runs a loop or a branch instruction: its nested Programs, bound.

A body Program (compiler/control.py) reads its inputs from registers the loop points at
memory of its choosing and writes its outputs into "external" registers, also the
loop's. A scan binds its body once per (row, parity): the step that reads row r of the
xs and writes row r of the ys, reading its carry from one of two buffers and writing
the next carry into the other (parity: which is which). Every such binding is a list
of prebound calls, made the first time it runs and kept; instructions that read none of
the registers that change from step to step are bound once and shared. A step costs
what the same instructions cost on a straight tape: one call each, no lookups, no
copies, no allocation.

A body is bound to contiguous memory: a loop input whose array is a strided view (a
transposed parameter) is copied into a contiguous buffer at the start of every run.
"""
from time import perf_counter

import numpy as np

from ..core import OPS
from ..errors import ExprError
from ..ops.control.scan import check_length


def arena(nbytes):
    """nbytes of uint8 starting on a 64-byte boundary (cache lines; vector loads in kernels)."""
    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes]


class BoundBody:
    """A body Program bound to an arena of its own. `fixed` gives the arrays of inputs that
    stay the same for every binding (a loop's captured nodes); steps(given) binds the
    others (carries, rows, outputs) and returns the prebound calls of one iteration."""

    def __init__(self, prog, fixed):
        self.prog = prog
        # the profiler's counters (machines/profile.py): seconds per instruction summed
        # over iterations, and iterations, while `timing` is a list; None: not timed
        self.timing = None
        self.iterations = 0
        regs = prog.registers
        self.root = [prog.root(r.id).id for r in regs]
        varying = {rid for rid in list(prog.inputs) + list(prog.externals)
                   if rid is not None and rid not in fixed}
        self.var_views = [r.id for r in regs if r.kind == "view" and self.root[r.id] in varying]
        mem = arena(prog.arenas.get("cpu", 0)) if prog.bases is not None else None
        arrays, shared = [None] * len(regs), {}
        for r in regs:
            if r.id in fixed:
                arrays[r.id] = fixed[r.id]
            elif r.kind == "buffer":
                if mem is None:
                    arrays[r.id] = np.empty(r.shape, r.dtype)
                    continue
                key, lo, hi = prog.memory(r)
                same = (lo, r.shape, r.dtype.str)
                a = shared.get(same)
                if a is None:
                    a = shared[same] = mem[lo:hi].view(r.dtype).reshape(r.shape)
                arrays[r.id] = a
            elif r.kind == "const":
                arrays[r.id] = r.const
            elif r.kind == "view" and self.root[r.id] not in varying and arrays[r.base] is not None:
                arrays[r.id] = OPS[r.view[0]].impl(arrays[r.base], **r.view[1])
        self.base = arrays
        self.inner = {}             # instruction index -> BoundBody of a loop inside this body
        self.var_instrs = []
        steps = []
        for k, ins in enumerate(prog.instrs):
            touched = (*ins.ins, *ins.writes(), *ins.tmps)
            if any(self.root[i] in varying or arrays[i] is None for i in touched):
                self.var_instrs.append(k)
                steps.append(None)
            else:
                steps.append(self._bind(k, ins, arrays))
        self.base_steps = steps

    def _bind(self, k, ins, arrays):
        if ins.bodies:
            return bind_loop(ins, [arrays[i] for i in ins.ins], arrays[ins.out],
                             [arrays[t] for t in ins.tmps], self.inner, k)
        return ins.bind(arrays)

    def steps(self, given):
        """The prebound calls of one iteration whose varying registers hold `given`
        ({register id: array})."""
        arrays = list(self.base)
        for rid, a in given.items():
            arrays[rid] = a
        regs = self.prog.registers
        for rid in self.var_views:
            r = regs[rid]
            arrays[rid] = OPS[r.view[0]].impl(arrays[r.base], **r.view[1])
        out = list(self.base_steps)
        instrs = self.prog.instrs
        for k in self.var_instrs:
            out[k] = self._bind(k, instrs[k], arrays)
        return out


def run_calls(body, calls):
    """One iteration's prebound calls; timed per instruction while the profiler asks."""
    timing = body.timing
    if timing is None:
        for fn, args in calls:
            fn(*args)
        return
    for j, (fn, args) in enumerate(calls):
        t = perf_counter()
        fn(*args)
        timing[j] += perf_counter() - t
    body.iterations += 1


def _contiguous(a):
    """(array to bind, source to copy from each run or None)."""
    if a.flags.c_contiguous:
        return a, None
    return np.empty(a.shape, a.dtype), a


def bind_loop(ins, in_arrays, out, tmps, inner=None, k=None):
    """(fn, args) running a loop instruction over its input arrays into its output's
    packed bytes. `inner` (a dict, with key k) keeps the bound bodies of a loop nested in
    another loop's body, shared by all of the outer body's bindings."""
    kind = ins.meta["kind"]
    if kind == "scan":
        return _bind_scan(ins, in_arrays, out, tmps, inner, k)
    if kind == "while":
        return _bind_while(ins, in_arrays, out, tmps, inner, k)
    if kind == "cond":
        return _bind_cond(ins, in_arrays, out, tmps, inner, k)
    raise ExprError(f"no runner for loop kind {kind!r}")


def _unpack(out, outputs):
    return [out[off:off + int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize]
            .view(np.dtype(dt)).reshape(shape) for off, shape, dt in outputs]


def _bound(prog, rids, arrays, inner, key):
    """(BoundBody, {register: array} each binding must give) of a body whose inputs at
    `rids` hold `arrays` for the whole run (a loop's captured nodes). A top-level loop
    binds them once; a loop nested in another's body is bound for each of the enclosing
    body's bindings and shares one BoundBody (one arena) among them."""
    given = {rid: a for rid, a in zip(rids, arrays) if rid is not None}
    if inner is None:
        return BoundBody(prog, given), {}
    body = inner.get(key)
    if body is None:
        body = inner[key] = BoundBody(prog, {})
    return body, given


def _inputs(arrays, refresh):
    """The arrays a body is bound to: contiguous ones as they are, strided ones through a
    contiguous copy made every run (listed in refresh)."""
    out = []
    for a in arrays:
        bound, src = _contiguous(a)
        if src is not None:
            refresh.append((bound, src))
        out.append(bound)
    return out


def _bind_scan(ins, in_arrays, out, tmps, inner, k):
    m = ins.meta
    prog = ins.bodies[0]
    nc, nx, nk = m["n_carry"], m["n_x"], m["n_cap"]
    rows, steps, reverse, summed = m["rows"], m["steps"], m["reverse"], m["summed"]
    inits = in_arrays[:nc]
    refresh = []                    # (contiguous copy, strided source): copied every run
    xs = _inputs(in_arrays[nc:nc + nx], refresh)
    caps = _inputs(in_arrays[nc + nx:nc + nx + nk], refresh)
    length = in_arrays[-1] if steps is None else None
    results = _unpack(out, m["outputs"])
    carry_out, ys = results[:nc], results[nc:]
    bufs = [(tmps[c], tmps[nc + c]) for c in range(nc)]
    parts = iter(tmps[2 * nc:])
    step_out = [next(parts) if s else None for s in summed]     # a summed y's step value
    accs = [(ys[j], step_out[j]) for j, s in enumerate(summed) if s]
    stacked = [ys[j] for j, s in enumerate(summed) if not s]

    in_rids, ext = prog.inputs, prog.externals
    body, per_run = _bound(prog, in_rids[nc + nx:], caps, inner, (k, 0))
    # A carry that is also a stacked y (one register: compiler/control.row_bound) lives in
    # that y's rows: a step writes it into its row and the next step reads it from there.
    rows_of = {c: j for c in range(nc) for j in range(len(summed))
               if not summed[j] and ext[c] == ext[nc + j]}
    back = 1 if reverse else -1         # where the previous step's row is

    variants = {}

    def variant(r, p, first):
        key = (r, p, first)
        hit = variants.get(key)
        if hit is None:
            given = dict(per_run)
            for j in range(len(summed)):
                given[ext[nc + j]] = step_out[j] if summed[j] else ys[j][r, ...]
            for c in range(nc):
                j = rows_of.get(c)
                if j is None:
                    carry_in = bufs[c][p]
                    given[ext[c]] = bufs[c][1 - p]
                else:
                    carry_in = bufs[c][0] if first else ys[j][r + back, ...]
                if in_rids[c] is not None:
                    given[in_rids[c]] = carry_in
            for i in range(nx):
                if in_rids[nc + i] is not None:
                    given[in_rids[nc + i]] = xs[i][r, ...]
            hit = variants[key] = body.steps(given)
        return hit

    sequences = {}

    def sequence(n):
        seq = sequences.get(n)
        if seq is None:
            order = range(n - 1, -1, -1) if reverse else range(n)
            seq = sequences[n] = [variant(r, i & 1, i == 0) for i, r in enumerate(order)]
        return seq

    def last_row(n):
        return 0 if reverse else n - 1

    def run():
        n = steps if steps is not None else check_length(length, rows)
        for bound, src in refresh:
            np.copyto(bound, src)
        for c in range(nc):
            np.copyto(bufs[c][0], inits[c])
        for acc, _ in accs:
            acc.fill(0)
        if accs or body.timing is not None:
            for calls in sequence(n):
                run_calls(body, calls)
                for acc, part in accs:
                    np.add(acc, part, out=acc)
        else:
            for calls in sequence(n):
                for fn, args in calls:
                    fn(*args)
        for c in range(nc):
            j = rows_of.get(c)
            np.copyto(carry_out[c], bufs[c][n & 1] if j is None else
                      (ys[j][last_row(n)] if n else bufs[c][0]))
        if n < rows:
            for y in stacked:
                y[n:] = 0
    run.bound = (body,)
    return run, ()


def _bind_while(ins, in_arrays, out, tmps, inner, k):
    m = ins.meta
    cprog, bprog = ins.bodies
    nc, ncc, limit, n_stack = m["n_carry"], m["n_cap_cond"], m["max_iterations"], m["n_stack"]
    inits = in_arrays[:nc]
    refresh = []
    caps_c = _inputs(in_arrays[nc:nc + ncc], refresh)
    caps_b = _inputs(in_arrays[nc + ncc:], refresh)
    results = _unpack(out, m["outputs"])
    carry_out, count, stacks = results[:nc], results[nc], results[nc + 1:]
    bufs = [(tmps[c], tmps[nc + c]) for c in range(nc)]
    pred = np.zeros((), cprog.registers[cprog.externals[0]].dtype)
    cbody, cgiven = _bound(cprog, cprog.inputs[nc:], caps_c, inner, (k, 0))
    bbody, bgiven = _bound(bprog, bprog.inputs[nc:], caps_b, inner, (k, 1))

    conds = []
    for p in (0, 1):
        given = dict(cgiven)
        given[cprog.externals[0]] = pred
        for c in range(nc):
            if cprog.inputs[c] is not None:
                given[cprog.inputs[c]] = bufs[c][p]
        conds.append(cbody.steps(given))
    variants = {}

    def variant(i, p):
        key = (i if n_stack else 0, p)
        hit = variants.get(key)
        if hit is None:
            given = dict(bgiven)
            for c in range(nc):
                if bprog.inputs[c] is not None:
                    given[bprog.inputs[c]] = bufs[c][p]
                given[bprog.externals[c]] = bufs[c][1 - p]
            for j in range(n_stack):
                given[bprog.externals[nc + j]] = stacks[j][i, ...]
            hit = variants[key] = bbody.steps(given)
        return hit

    def run():
        for bound, src in refresh:
            np.copyto(bound, src)
        for c in range(nc):
            np.copyto(bufs[c][0], inits[c])
        i = p = 0
        while limit is None or i < limit:
            run_calls(cbody, conds[p])
            if not pred:
                break
            run_calls(bbody, variant(i, p))
            i += 1
            p ^= 1
        for c in range(nc):
            np.copyto(carry_out[c], bufs[c][p])
        count[...] = i
        for s in stacks:
            s[i:] = 0
    run.bound = (cbody, bbody)
    return run, ()


def _bind_cond(ins, in_arrays, out, tmps, inner, k):
    m = ins.meta
    refresh = []
    pred = in_arrays[0]
    args = _inputs(in_arrays[1:], refresh)
    results = _unpack(out, m["outputs"])
    branches, bound = [], []
    for b, prog in enumerate(ins.bodies):
        body, given = _bound(prog, prog.inputs, args, inner, (k, b))
        for rid, r in zip(prog.externals, results):
            given[rid] = r
        branches.append(body.steps(given))
        bound.append(body)
    (taken, other), (tbody, fbody) = branches, bound

    def run():
        for src_bound, src in refresh:
            np.copyto(src_bound, src)
        if pred:
            run_calls(tbody, taken)
        else:
            run_calls(fbody, other)
    run.bound = (tbody, fbody)
    return run, ()
