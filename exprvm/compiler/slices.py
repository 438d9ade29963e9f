"""Slice pushing, before fusion: an elementwise op read only through slices (z = x_t + h @ W,
then z's four gates z[:, :H], ...) is pushed into them (x_t[:, :H] + (h @ W)[:, :H], ...:
views), so that each joins its gate's fused group instead of running alone over all of z.

In: the optimized IR (live Vals in topological order), the Vals whose values must survive
and the roots (as ids). Out: the same Vals rewritten in place (the users lists of ops kept
true, those of leaves may still hold ops pushed away; new views are read by the pushed
slices, not in the list), and the count of ops pushed. The caller makes a new live list
(and with it true users lists) when anything was pushed.
"""
import heapq

from ..core import FLOAT_DTYPES
from . import ir
from .lowering.scalar import fusable, result_kind
from .members import broadcast_kind, literal, member_class

ROUNDS = 8      # a pushed op's operand, read through slices now, may be pushed in turn
_ALL = slice(None)


def push_slices(live, keep, root_ids):
    """z = op(a, b) read only through slices -> each slice op(a[...], b[...]): the slices of
    same-shaped operands and bias rows are free views, and a slice that is one part of a
    concatenation is that part (which undoes the batching of independent elementwise ops).
    Returns the count of ops pushed.

    In rounds, as a pushed op's operands are read through slices now and may be pushed in
    turn (a round meets them before the op). Each round looks at Vals in live's order, the
    first at all of them, a later one only at the Vals an earlier push changed (_push says
    which): the same pushes, in the same order, as a rescan of all of live each round.
    A Val changed after its place in this round is looked at in this round."""
    at = {}         # Val -> its position in live; NOTE: made at the first push (often none)
    total, todo = 0, None
    for _ in range(ROUNDS):
        again, n = set(), 0
        if todo is None:        # the first round: every Val, in order
            for i, v in enumerate(live):
                # NOTE: cheap test first
                if v.users and v.users[0].op == "getitem" and _push_at(live, i, at, again, None, keep, root_ids):
                    n += 1
        else:       # what a push changed, in order: a heap, as the round itself may add more
            heap = sorted(todo)
            ahead = (heap, set(heap))
            while heap:
                i = heapq.heappop(heap)
                v = live[i]
                if v.users and v.users[0].op == "getitem" and _push_at(live, i, at, again, ahead, keep, root_ids):
                    n += 1
        if not n:
            break
        total += n
        todo = again
    return total


def _push_at(live, i, at, again, ahead, keep, root_ids):
    """Push live[i] if it may be (at: each Val's position in live, filled here at the first
    push). The Vals the push changed are looked at again: those at or before i in the next
    round (their positions added to `again`), those after it in this one (added to ahead =
    (heap, its set); None in the first round, which meets them anyway). True if pushed."""
    v = live[i]
    plan = _slicing(v, keep, root_ids)
    if plan is None:
        return False
    if not at:
        at.update(zip(live, range(len(live))))
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
        lit = literal(x, t) is not None
        kind = None if lit or x.dtype != t else broadcast_kind(x.shape, shape)
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
        if member_class(w, keep, root_ids) is not None:
            return True
    for _, part, _, _, _ in ops:
        if part is not None and part.shape == u.shape and member_class(part, keep, root_ids) is not None:
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
    operands by the views and slices that read them now (a leaf operand by v as well,
    until the caller's new live list), and the first of equal slices by the readers of the
    others (dups: duplicate -> first)."""
    for x in dict.fromkeys(v.ins):
        if x.kind != "op":
            # NOTE: a leaf's users keep v: no push asks who reads a leaf, and the live list
            # made after the pushes makes them true. A leaf may be read by every step (a
            # bias), and a scan of its users for each push was quadratic in the steps.
            continue
        for _ in range(v.ins.count(x)):     # x's users hold v once for each time v reads x
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


def _index_key(full, shape):
    """A basic index padded to every axis (_slicing's `full`) as a comparable key: slices
    resolved."""
    return tuple([i.indices(d) if type(i) is slice else ("i", i % d if d else i) for i, d in zip(full, shape)])


def _concat_part(x, full):
    """The operand of concatenation x that x[full] is exactly (the batching pass stacks
    the rows of independent ops; sliced back, each op reads its own operand), or None.
    full: an index with one entry per axis of x."""
    if x.kind != "op" or x.op != "concat" or len(full) != len(x.shape):
        return None
    axis = x.params["axis"]
    if any(i != _ALL for a, i in enumerate(full) if a != axis) or type(full[axis]) is not slice:
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


def _index_of(x, full, shape):
    """The index of operand x (v's shape, or a row broadcast over it) that picks what
    v[full] reads of it (full: one entry per axis of v); None if it is x whole."""
    mine = full[len(full) - len(x.shape):] if x.shape else ()
    out = tuple([(0 if type(i) is int else _ALL) if d == 1 and s != 1 else i
                 for i, d, s in zip(mine, x.shape, shape[len(shape) - len(x.shape):])])
    for i in out:
        if i != _ALL:
            return out
    return None
