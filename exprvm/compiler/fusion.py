"""Fusion: every maximal connected group of elementwise ops over one shape becomes one
instruction running one generated C kernel (compiler/lowering/fused.py, kernels/generated.py).

In: the optimized IR (live Vals in topological order), the roots and the Vals whose values
must survive. Out: the IR with each group replaced by one `fused` Val (its inputs are the
group's operands; its value the member read outside the group, or those members stacked,
each then a free view of it), and a note for the disassembly.

Who may join: an op with a scalar formula (lowering/scalar.py) in float32/float64, over
operands that are the group's shape ("full": also a gate sliced out of a wider matrix,
read in place), a row broadcast along the leading axes (a bias), a column (one value per
row), or a scalar (a size-1 constant is written into the source). Comparisons join as
int temporaries read by `where`; a comparison read outside its group stays outside.
Before grouping, an op read only through slices (z = x_t + h @ W, then z's four gates)
is pushed into them (x_t[:, :H] + (h @ W)[:, :H], ...: views), so it joins each gate's
group. After grouping, a last-axis concatenation of a group's results (the gates'
gradients a matmul reads as one matrix) becomes the layout of the fused value: no copy.

Groups are convex by construction. Every edge costs 1, except one between two would-be
members of one shape and dtype (0); each Val gets a level with level(v) >= level(x) +
cost(x, v) on every edge x -> v (the longest path, then members raised to the level of
the members reading them where their other readers allow), and only members of equal
level are joined. A path leaving a group and coming back crosses a costly edge, so its
end would sit a level higher: no fused instruction ever waits on a value that needs its
own result. Groups longer than MAX_MEMBERS are cut into runs. Forward and backward
(gradient) groups fuse alike; nothing here looks at how a formula is spelled.
"""
import heapq
import math

import numpy as np

from ..core import FLOAT_DTYPES
from ..errors import BackendError
from ..kernels import generated
from . import ir, known, tiers
from .lowering import fused as _fused  # noqa: F401  (registers the fused op and its rows)
from .lowering.fused import FusedGroup
from .lowering.scalar import SCALAR, fusable, result_kind

BOOL = np.dtype(bool)
MIN_MEMBERS = 2
MAX_MEMBERS = 48        # a longer group is cut into several (a 10,000-op chain compiles quickly)
ROUNDS = 8
_ALL = slice(None)
# NOTE: asked for every Val: the ops that may join a group when they have no params, and
# their result kind (SCALAR is complete once lowering.scalar is imported)
_PLAIN_KINDS = {op: result_kind(op) for op in SCALAR if fusable(op, {})}
DEFERRED = "fusion deferred: its kernels build in the background (tiered compilation)"


def available():
    """(True, how) when fused kernels can be generated here, else (False, why)."""
    return generated.available()


def _size(shape):
    return math.prod(shape)    # NOTE: not np.prod: a Python call per use, on the compile path


def _kind(xshape, shape):
    """How an operand of xshape broadcasts over a group of `shape`, or None."""
    if tuple(xshape) == tuple(shape):
        return "full"
    if _size(xshape) == 1 and len(xshape) <= len(shape):
        return "scalar"
    if shape and xshape and xshape[-1] == shape[-1] and all(d == 1 for d in xshape[:-1]) \
            and len(xshape) <= len(shape):
        return "row"
    if len(shape) >= 2 and tuple(xshape) == tuple(shape[:-1]) + (1,):
        return "col"
    return None


def _literal(x, t):
    """The Python value of a size-1 constant of dtype t (or bool), else None."""
    if x.kind != "const" or x.value is None or x.value.size != 1 or x.dtype not in (t, BOOL):
        return None
    v = x.value.reshape(-1)[0]
    return bool(v) if x.dtype == BOOL else float(v)


def _class(v, keep, roots):
    """(shape, float dtype) of an op that may join a group, else None."""
    # NOTE: runs for every Val: `0 in shape` is an empty shape's test without a call
    if v.kind != "op" or 0 in v.shape:
        return None
    kind = _PLAIN_KINDS.get(v.op) if not v.params else result_kind(v.op) if fusable(v.op, v.params) else None
    if kind is None:
        return None
    shape = v.shape
    if kind == "bool":
        floats = [x.dtype for x in v.ins if x.dtype != BOOL]
        if v.dtype != BOOL or id(v) in keep or id(v) in roots or len(set(floats)) != 1:
            return None
        t = floats[0]
        if t not in FLOAT_DTYPES:
            return None
    else:
        t = v.dtype
        if t not in FLOAT_DTYPES:
            return None
    for pos, x in enumerate(v.ins):
        d = x.dtype
        if d is not t and d != t:       # NOTE: identity first: the usual case, with no comparison call
            if d != BOOL or not (v.op == "where" and pos == 0) and _literal(x, t) is None:
                return None
        elif x.shape == shape:      # NOTE: the common case first: an operand of the group's shape
            continue
        if _literal(x, t) is None and _kind(x.shape, shape) is None:
            return None
    return (shape, t)       # NOTE: the dtype itself: dtype.str makes a new string per call


def _root(parent, a):
    """a's root in the union-find forest `parent` (halving the path on the way)."""
    while True:
        p = parent[a]
        if p is a:
            return a
        parent[a] = parent[p]
        a = parent[p]


def _components(live, cls):
    """Members of equal level joined along free edges: {root: [Vals in order]}. cls and the
    dicts here are keyed by the Vals themselves (no id() call per lookup)."""
    # An edge costs 0 between two would-be members of one shape and dtype (a free edge),
    # else 1.
    get = cls.get
    level, free = {}, []
    for v in live:
        lv, c = 0, get(v)
        if c is None:
            for x in v.ins:
                lx = level[x] + 1
                if lx > lv:
                    lv = lx
        else:
            for x in v.ins:
                if get(x) == c:
                    free.append((x, v))
                    lx = level[x]
                else:
                    lx = level[x] + 1
                if lx > lv:
                    lv = lx
        level[v] = lv
    # NOTE: any levels with level(v) >= level(x) + cost(x, v) on every edge keep groups
    # convex. A member is raised to the level of the members reading it where its other
    # readers allow (a bias add computed early for a later gate): it then joins them.
    # The highest level allowed is the lowest among the members reading v (of its class) and
    # one below every other reader; v rises to it only if that is a member's level.
    inf = math.inf
    for v in reversed(live):
        c = get(v)
        if c is None:
            continue
        free_at = other = inf
        for u in v.users:
            lu = level[u]
            if get(u) == c:
                if lu < free_at:
                    free_at = lu
            elif lu - 1 < other:
                other = lu - 1
        if free_at <= other and free_at != inf and free_at > level[v]:
            level[v] = free_at
    parent = {v: v for v in live if get(v) is not None}
    for x, v in free:
        if level[x] == level[v]:
            ra, rb = _root(parent, x), _root(parent, v)
            if ra is not rb:
                parent[rb] = ra
    groups = {}
    for v in parent:        # NOTE: in live's order, as parent was filled
        r = _root(parent, v)
        members = groups.get(r)
        if members is None:
            groups[r] = [v]
        else:
            members.append(v)
    return groups


def _groups(live, keep, roots):
    """The groups to fuse: lists of member Vals in topological order."""
    root_ids = {id(r) for r in roots}
    cls, number = {}, {}
    for v in live:
        c = _class(v, keep, root_ids)
        if c is not None:
            # NOTE: each class as a small int: _components compares classes on every edge
            cls[v] = number.setdefault(c, len(number))
    for _ in range(ROUNDS):
        groups = _components(live, cls)
        dropped = False
        for members in groups.values():
            inside = set(members)
            for m in members:
                # NOTE: a comparison is an int temporary inside a kernel; one read outside
                # its group (or alone) runs on its own instead.
                if m.dtype == BOOL and (len(members) < MIN_MEMBERS
                                        or any(u not in inside for u in m.users)):
                    del cls[m]
                    dropped = True
        if not dropped:
            break
    else:
        for v in live:
            if v.dtype == BOOL:
                cls.pop(v, None)
        groups = _components(live, cls)
    return [c for ms in groups.values() for c in _chunks(ms)
            if len(c) >= MIN_MEMBERS and any(m.dtype != BOOL for m in c)]


def _chunks(members):
    """members (topological order) cut into runs of about MAX_MEMBERS. A run of a convex
    group is convex (a path between two of its members passes only members in between),
    and a later run never feeds an earlier one. No cut separates a comparison from the
    members reading it (it is never stored)."""
    out, cur = [], []
    pending = {}            # a comparison in cur -> its readers not yet in cur
    for m in members:
        if len(cur) >= MAX_MEMBERS and not pending:
            out.append(cur)
            cur = []
        cur.append(m)
        for x in m.ins if pending else ():
            left = pending.get(id(x))
            if left is not None:
                left.discard(id(m))
                if not left:
                    del pending[id(x)]
        if m.dtype == BOOL:
            pending[id(m)] = {id(u) for u in m.users}
    if cur:
        out.append(cur)
    return out


def _push_slices(live, keep, root_ids):
    """z = op(a, b) read only through slices (an LSTM's gates z[:, :H], ...) -> each slice
    op(a[...], b[...]): the slices of same-shaped operands and bias rows are free views, a
    slice that is one part of a concatenation is that part (which undoes the batching of
    independent elementwise ops), and each op joins the group of what it reads or feeds
    instead of running alone over all of z. Returns the count.

    In rounds, as a pushed op's operands are read through slices now and may be pushed in
    turn (the scan meets them before the op). Each round looks at Vals in the order of
    `live`; after the first, only at those a push changed: the Vals whose test reads what
    the push rewrote (_touched). A change met later in `live` is seen in the same round."""
    at = {v: i for i, v in enumerate(live)}
    total, todo = 0, None
    for _ in range(ROUNDS):
        again, n = set(), 0
        if todo is None:        # the first round: every Val, in order
            for i, v in enumerate(live):
                # NOTE: cheap test first
                if v.users and v.users[0].op == "getitem" and _push_at(v, i, at, again, None, keep, root_ids):
                    n += 1
        else:       # what a push changed, in order: a heap, as the round itself may add more
            heap = sorted(todo)
            ahead = (heap, set(heap))
            while heap:
                i = heapq.heappop(heap)
                v = live[i]
                if v.users and v.users[0].op == "getitem" and _push_at(v, i, at, again, ahead, keep, root_ids):
                    n += 1
        if not n:
            break
        total += n
        todo = again
    return total


def _push_at(v, i, at, again, ahead, keep, root_ids):
    """Push v, at position i of live, if it may be. The Vals the push changed are looked at
    again: those at or before i in the next round (their positions added to `again`), those
    after it in this one (added to ahead = (heap, its set); None in the first round, which
    meets them anyway). True if v was pushed."""
    plan = _slicing(v, keep, root_ids)
    if plan is None:
        return False
    for w in _push(v, plan):
        j = at.get(w)
        if j is None:       # a view made by a push: never a candidate
            continue
        if j <= i:
            again.add(j)
        elif ahead is not None and j not in ahead[1]:
            ahead[1].add(j)
            heapq.heappush(ahead[0], j)
    return True


def _slicing(v, keep, root_ids):
    """How v would be pushed into its slices, or None if it stays: per slice Val, (the
    slice, its index padded to every axis, per operand of v (its kind or None for a
    literal, the concatenation's part it reads or None, the operand, its index or None
    for the operand whole, the view's shape)). Reads the IR only."""
    if (v.kind != "op" or id(v) in keep or id(v) in root_ids
            or not fusable(v.op, v.params) or result_kind(v.op) != "T" or v.dtype not in FLOAT_DTYPES):
        return None
    shape, t = v.shape, v.dtype
    users = list(dict.fromkeys(v.users))
    for u in users:
        if not (u.op == "getitem" and u.ins[0] is v and _plain_index(u.params["index"], shape) and u.users):
            return None
    kinds = []              # per operand: "full", "row", or None (a literal: read whole)
    for x in v.ins:
        lit = _literal(x, t) is not None
        kind = None if lit or x.dtype != t else _kind(x.shape, shape)
        if not lit and kind not in ("full", "row"):
            return None
        kinds.append(None if lit else kind)
    plan = []
    for u in users:
        index = u.params["index"]
        full = tuple(index) + (_ALL,) * (len(shape) - len(index))
        whole = full.count(_ALL) == len(full)
        ops = []
        for x, kind in zip(v.ins, kinds):
            if kind is None:
                ops.append((None, None, x, None, None))
                continue
            if kind == "full":      # NOTE: x[index] is then u's own index and shape
                xi, xshape = (None, None) if whole else (full, u.shape)
            else:
                xi = _index_of(x, full, shape)
                xshape = None if xi is None else _sliced_shape(x.shape, xi)
            part = _concat_part(x, xi) if xi is not None and x.op == "concat" else None
            ops.append((kind, part, x, xi, xshape))
        # NOTE: worth it only if every slice then has a neighbour to fuse with, else one op
        # over z would become several.
        if not _has_neighbour(u, ops, keep, root_ids):
            return None
        plan.append((u, full, ops))
    return plan


def _has_neighbour(u, ops, keep, root_ids):
    """Would slice u, once an op (ops: its operands as _slicing plans them), have a reader
    or a concatenation's part it reads to fuse with? (Loops, not any(): asked per slice.)"""
    for w in u.users:
        if _class(w, keep, root_ids) is not None:
            return True
    for _, part, _, _, _ in ops:
        if part is not None and part.shape == u.shape and _class(part, keep, root_ids) is not None:
            return True
    return False


def _push(v, plan):
    """v pushed into its slices as _slicing planned. Returns the Vals whose push test may
    differ now: those rewritten, those whose readers changed, and those that read them as
    a neighbour (a candidate whose slice they read, or whose concatenated operand they are
    part of)."""
    views, first, dups, rewritten = {}, {}, {}, []
    for u, full, ops in plan:
        # NOTE: a lone slice has no equal to look for
        same = first.setdefault(_index_key(full, v.shape), u) if len(plan) > 1 else u
        if same is not u:       # the same slice twice: its readers read the first one
            dups[u] = same
            for w in u.users:
                w.ins = [same if x is u else x for x in w.ins]
                rewritten.append(w)
            continue
        ins = []
        for i, (kind, part, x, index, shape) in enumerate(ops):
            if part is not None:
                ins.append(part)
            elif index is None:
                ins.append(x)
            else:
                # NOTE: a full operand's index is its slice's own (distinct slices, distinct
                # views); a row's may repeat (slices differing only along its broadcast axes)
                key = (x, u) if kind == "full" else (x, repr(index))
                view = views.get(key)
                if view is None:
                    view = views[key] = ir.Val((u.key[0], u.key[1] - 0.5 + 0.01 * i), "op", "getitem", [x],
                                               {"index": index}, shape, x.dtype)
                ins.append(view)
        u.op, u.ins, u.params = v.op, ins, dict(v.params)
        rewritten.append(u)
    _relink(v, [u for u, _, _ in plan], dups, views.values())
    changed = list(v.ins) + list(dups)
    for w in rewritten:
        changed.append(w)
        for y in w.ins:
            changed.append(y)
            if y.op == "getitem":
                changed.append(y.ins[0])
        for c in w.users:
            if c.op == "concat":
                changed.extend(c.users)
        if w.op == "concat":
            changed.extend(w.users)
    for x in v.ins:
        if x.op == "getitem":
            changed.append(x.ins[0])
    return changed


def _relink(v, users, dups, views):
    """Users lists made true again after v was pushed into its slices `users` (so that the
    next round needs no new live list): v and the duplicate slices are read by nobody, v's
    operands by the views and slices that read them now, and the first of equal slices
    by the readers of the others (dups: duplicate -> first)."""
    for x in dict.fromkeys(v.ins):
        # NOTE: removed in place by C-level scans: x may be read by every step (a weight),
        # and a Python pass over its users for every pushed op was quadratic in the steps
        for _ in range(x.users.count(v)):
            x.users.remove(v)
    for view in views:
        view.ins[0].users.append(view)
    for u in users:
        same = dups.get(u)
        if same is not None:
            same.users.extend(u.users)
            u.users = []
            continue
        for x in u.ins:
            x.users.append(u)
    v.users = []


def _sliced_shape(shape, index):
    """The shape of x[index] for x of `shape` and a plain index (ints and slices). NOTE:
    worked out here, not by indexing an array: an array of x's size would make the pass
    quadratic (x may hold every step of a sequence)."""
    out = []
    for i, n in zip(index, shape):
        if type(i) is slice:
            out.append(len(range(*i.indices(n))))
    return tuple(out) + tuple(shape[len(index):])


def _index_key(index, shape):
    """A basic index as a comparable key: padded to every axis, slices resolved."""
    full = tuple(index) + (_ALL,) * (len(shape) - len(index))
    return tuple([i.indices(d) if type(i) is slice else ("i", i % d if d else i) for i, d in zip(full, shape)])


def _concat_part(x, index):
    """The operand of concatenation x that x[index] is exactly (the batching pass stacks
    the rows of independent ops; sliced back, each op reads its own operand), or None."""
    if x.kind != "op" or x.op != "concat" or len(index) > len(x.shape):
        return None
    axis = x.params["axis"]
    full = tuple(index) + (slice(None),) * (len(x.shape) - len(index))
    if any(i != slice(None) for a, i in enumerate(full) if a != axis) or type(full[axis]) is not slice:
        return None
    start, stop, step = full[axis].indices(x.shape[axis])
    at = 0
    for p in x.ins:
        if (at, at + p.shape[axis]) == (start, stop) and step == 1:
            return p
        at += p.shape[axis]
    return None


def _plain_index(index, shape):
    """Ints and slices only, at most one per axis (a basic index: a view)."""
    if len(index) > len(shape):
        return False
    for i in index:
        if type(i) is not int and type(i) is not slice:
            return False
    return True


def _index_of(x, index, shape):
    """The index of operand x (v's shape, or a row broadcast over it) that picks what
    v[index] reads of it; None if it is x whole."""
    full = tuple(index) + (_ALL,) * (len(shape) - len(index))
    mine = full[len(full) - len(x.shape):] if x.shape else ()
    out = tuple([(0 if type(i) is int else _ALL) if d == 1 and s != 1 else i
                 for i, d, s in zip(mine, x.shape, shape[len(shape) - len(x.shape):])])
    for i in out:
        if i != _ALL:
            return out
    return None


def _concats_of(stored, shape, t):
    """Last-axis concatenations of stored members only (the gates' gradients a matmul
    reads as one matrix), longest first."""
    if not shape:
        return []
    inside = set(stored)
    found = {}
    for m in stored:
        for u in m.users:
            # NOTE: the op's name first: most readers are no concatenation
            if (u.op == "concat" and u.kind == "op" and u.params.get("axis") == len(shape) - 1
                    and u.dtype == t and len(u.ins) >= 2 and all(p in inside for p in u.ins)):
                found[u] = u
    return sorted(found.values(), key=lambda u: -len(u.ins))


def _spec(members, keep, root_ids):
    """(FusedGroup, external input Vals, stored members, dtype, concatenations laid out)."""
    shape = members[0].shape
    t = np.dtype(members[0].dtype if members[0].dtype != BOOL else
                 next(x.dtype for x in members[0].ins if x.dtype != BOOL))
    # NOTE: the dicts here are keyed by the Vals themselves (no id() call per lookup)
    index = dict(zip(members, range(len(members))))
    ext, ext_pos, specs, sites, stored = [], {}, [], [], []
    for m in members:
        refs = []
        for x in m.ins:
            j = index.get(x)
            if j is not None:
                refs.append(("v", j))
                continue
            lit = _literal(x, t) if x.kind == "const" else None     # NOTE: no call for most inputs
            if lit is not None:
                refs.append(("lit", lit))
                continue
            pos = ext_pos.get(x)
            if pos is None:
                pos = ext_pos[x] = len(ext)
                ext.append(x)
            refs.append(("in", pos))
        specs.append((m.op, tuple(sorted(m.params.items())) if m.params else (), tuple(refs)))
        if m.nodes:
            sites.append(m.nodes[0].site)
        if id(m) in keep or id(m) in root_ids:
            stored.append(m)
            continue
        for u in m.users:
            if u not in index:      # read outside the group
                stored.append(m)
                break
    cats = _concats_of(stored, shape, t) if len(stored) > 1 else []
    # NOTE: with concatenations, the results lie side by side along the last axis: each
    # concatenation's parts in its order (a member two of them read is stored twice), then
    # the other results; every concatenation is then a view, as is every result.
    blocks = [p for c in cats for p in c.ins]
    if blocks:
        laid = set(blocks)
        blocks += [m for m in stored if m not in laid]
    else:
        blocks = stored
    inputs = tuple([("full" if x.shape == shape else _kind(x.shape, shape), x.dtype == BOOL) for x in ext])
    group = FusedGroup(shape=tuple(shape), inputs=inputs, members=tuple(specs),
                       outputs=tuple([index[m] for m in blocks]),
                       layout="concat" if cats else "stack",
                       sites=tuple([s for s in sites if s]))
    return group, ext, blocks, t, cats


def _rewrite(members, group, ext, blocks, t, cats):
    last = members[-1]
    if len(blocks) == 1:
        v = blocks[0]
        v.op, v.ins, v.params = "fused", list(ext), {"group": group}
        return v
    if len(cats) == 1 and len(cats[0].ins) == len(blocks):
        packed = cats[0]        # the concatenation is the fused value itself
        packed.op, packed.ins, packed.params = "fused", list(ext), {"group": group}
        cats = []
    else:
        packed = ir.Val((last.key[0], last.key[1] - 0.5), "op", "fused", ext, {"group": group},
                        group.out_shape, t)
    c, lead, start = group.shape[-1] if group.shape else 1, (slice(None),) * (len(group.shape) - 1), 0
    for cat in cats:
        width = len(cat.ins) * c
        cat.op, cat.ins, cat.params = "getitem", [packed], {"index": lead + (slice(start, start + width),)}
        start += width
    done = set()
    for q, v in enumerate(blocks):
        if id(v) in done:       # stored twice: the first copy stands for it
            continue
        done.add(id(v))
        # NOTE: each stored member is a view of the fused value: no copy, no instruction.
        v.op, v.ins, v.params = "getitem", [packed], {"index": group.output_index(q)}
    return packed


def fuse(live, roots, keep):
    """Rewrite the IR's elementwise groups into fused Vals. Returns (live, note or None).
    Nothing changes when no kernel can be built (no compiler: the note says why)."""
    # NOTE: the fingerprint of the IR as it comes in, before the analysis rewrites it
    fp = known.fingerprint(live)
    root_ids = {id(r) for r in roots}
    if tiers.deferring(fp) and _may_fuse(live, keep, root_ids):
        tiers.defer()
        return live, DEFERRED
    if _push_slices(live, keep, root_ids):
        live = ir.live_vals(roots)
    found = [(ms, *_spec(ms, keep, root_ids)) for ms in _groups(live, keep, roots)]
    if not found:
        known.remember(fp)              # (nothing to build: the program is known from now on)
        return live, None
    try:
        if not tiers.ready([f[1].kernel(f[4]) for f in found], fp):
            return live, DEFERRED
    except BackendError as e:
        return live, f"no fusion: {str(e).splitlines()[0]}"
    for members, group, ext, stored, t, cat in found:
        _rewrite(members, group, ext, stored, t, cat)
    n = sum(len(f[0]) for f in found)
    return ir.live_vals(roots), f"fused {n} elementwise ops into {len(found)} generated kernels"


def _may_fuse(live, keep, root_ids):
    """Could the analysis find a group? (Two ops that may join one; cheap: no grouping.)"""
    n = 0
    for v in live:
        if v.kind == "op" and _class(v, keep, root_ids) is not None:
            n += 1
            if n >= MIN_MEMBERS:
                return True
    return False


def annotate(live, instrs):
    """Name each fused instruction's members and lines in its disassembly comment."""
    by_out = {ins.out: ins for ins in instrs}
    for v in live:
        if v.op == "fused" and v.rid in by_out:
            ins = by_out[v.rid]
            text = v.params["group"].describe()
            ins.note = text if ins.note in ("", "optimizer") else f"{ins.note} {text}"
