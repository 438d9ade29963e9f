"""Fusion: every maximal connected group of elementwise ops over one shape becomes one
instruction running one generated C kernel (compiler/lowering/fused.py, kernels/generated.py).

In: the optimized IR (live Vals in topological order), the roots and the Vals whose values
must survive. Out: the IR with each group replaced by one `fused` Val (its inputs are the
group's operands; its value the member read outside the group, or those members stacked,
each then a free view of it), and a note for the disassembly.

Who may join (members.py): an op with a scalar formula (lowering/scalar.py) in
float32/float64, over operands that are the group's shape ("full": also a gate sliced out
of a wider matrix, read in place), a row broadcast along the leading axes (a bias), a
column (one value per row), or a scalar (a size-1 constant is written into the source).
Comparisons join as int temporaries read by `where`; a comparison read outside its group
stays outside. Before grouping, an op read only through slices (z = x_t + h @ W, then z's
four gates) is pushed into them (slices.py: x_t[:, :H] + (h @ W)[:, :H], ...: views), so
it joins each gate's group. After grouping, a last-axis concatenation of a group's
results (the gates' gradients a matmul reads as one matrix) becomes the layout of the
fused value: no copy.

Groups are convex by construction. Every edge costs 1, except one between two would-be
members of one shape and dtype (0); each Val gets a level with level(v) >= level(x) +
cost(x, v) on every edge x -> v (the longest path, then members raised to the level of
the members reading them where their other readers allow), and only members of equal
level are joined. A path leaving a group and coming back crosses a costly edge, so its
end would sit a level higher: no fused instruction ever waits on a value that needs its
own result. Groups longer than MAX_MEMBERS are cut into runs. Forward and backward
(gradient) groups fuse alike; nothing here looks at how a formula is spelled.
"""
import math

import numpy as np

from ..errors import BackendError
from ..kernels import generated
from . import ir, known, tiers
from .lowering import fused as _fused  # noqa: F401  (registers the fused op and its rows)
from .lowering.fused import FusedGroup
from .members import BOOL, broadcast_kind, literal, member_class
from .slices import push_slices

MIN_MEMBERS = 2
MAX_MEMBERS = 48        # a longer group is cut into several (a 10,000-op chain compiles quickly)
ROUNDS = 8      # comparisons read outside their groups dropped, then the groups again
DEFERRED = "fusion deferred: its kernels build in the background (tiered compilation)"


def available():
    """(True, how) when fused kernels can be generated here, else (False, why)."""
    return generated.available()


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


def _groups(live, keep, root_ids):
    """The groups to fuse: lists of member Vals in topological order."""
    cls, number = {}, {}
    for v in live:
        c = member_class(v, keep, root_ids)
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
            lit = literal(x, t) if x.kind == "const" else None     # NOTE: no call for most inputs
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
    inputs = tuple([("full" if x.shape == shape else broadcast_kind(x.shape, shape), x.dtype == BOOL) for x in ext])
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
    if push_slices(live, keep, root_ids):
        live = ir.live_vals(roots)
    found = [(ms, *_spec(ms, keep, root_ids)) for ms in _groups(live, keep, root_ids)]
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
        if v.kind == "op" and member_class(v, keep, root_ids) is not None:
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
