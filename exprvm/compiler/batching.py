"""Horizontal batching: k independent copies of one op (the same op on the rows of
each step of an unrolled loop) become one op over stacked rows.

    logits_t = h_t @ Why + by      for t = 1..25
 -> L = concat(h_1..h_25) @ Why + by;  logits_t = L[t*B:(t+1)*B]   (views: free)

Only ops that act on rows independently take part (their records say how: Op.batch;
elementwise ops, matmul with a shared right operand, take, the softmax family,
cross_entropy); the copies
must not depend on each other (checked with one bit per group of copies: a Val's mask
holds the groups it has an ancestor in, so the check is linear in the graph times the
number of groups / 64, however many copies a group has), so the merged op can run
once all of their inputs exist. Operands that are already
consecutive row slices of one array -- the per-step views of a fed (steps,
batch) array, or of an earlier batched result -- are taken as one slice, so
chains of batched ops cost no copies.
"""
from ..core import OPS
from . import ir
from .ir import Builder

MIN_COPIES = 3


def _roles(v):
    """Per input: "b" (stacked along axis 0) or "s" (shared by every copy), or None; the
    op's own record says (Op.batch)."""
    if v.kind != "op" or len(v.shape) == 0 or v.shape[0] == 0:
        return None
    batch = OPS[v.op].batch
    return None if batch is None else batch([x.shape for x in v.ins], v.shape, v.params)


def _key(v, roles):
    # NOTE: dtypes themselves, not dtype.str (a new string per call): equal dtypes hash alike
    params = repr(sorted(v.params.items())) if v.params else "[]"
    ins = tuple([(x.shape, x.dtype, id(x) if r == "s" else None) for x, r in zip(v.ins, roles)])
    return (v.op, params, ins, v.shape, v.dtype)


def _row_slice(x):
    """(base, start, stop) if x is rows [start, stop) of base (an int index is one row)."""
    if x.kind != "op" or x.op != "getitem":
        return None
    index = x.params["index"]
    if len(index) != 1:
        return None
    i = index[0]
    base = x.ins[0]
    n = base.shape[0] if base.shape else 0
    if isinstance(i, int) and not isinstance(i, bool):
        i = i % n if n else i
        return base, i, i + 1, True
    if isinstance(i, slice) and i.step in (None, 1):
        start, stop, _ = i.indices(n)
        return base, start, stop, False
    return None


def stack_rows(b, parts):
    """parts stacked along axis 0 (rows; an int-indexed part contributes its row's rows)."""
    cuts = [_row_slice(p) for p in parts]
    if all(c is not None for c in cuts):
        base = cuts[0][0]
        squeeze = cuts[0][3]
        if (all(c[0] is base and c[3] == squeeze for c in cuts)
                and all(a[2] == c[1] for a, c in zip(cuts, cuts[1:]))):
            start, stop = cuts[0][1], cuts[-1][2]
            rows = base if (start, stop) == (0, base.shape[0]) else b.op(
                "getitem", [base], (stop - start,) + base.shape[1:], base.dtype, index=(slice(start, stop),))
            if squeeze:
                shape = ((stop - start) * base.shape[1],) + base.shape[2:]
                return b.reshape(rows, shape)
            return rows
    shape = (sum(p.shape[0] for p in parts),) + parts[0].shape[1:]
    return b.op("concat", list(parts), shape, parts[0].dtype, axis=0)


def _ancestry(vals, bit):
    """{Val: bitmask of the groups it has an ancestor in}, for vals in topological order;
    bit: {Val: its group's bit}."""
    anc = {}
    get = bit.get
    for v in vals:
        m = 0
        for x in v.ins:
            m |= anc[x] | get(x, 0)
        anc[v] = m
    return anc


def _row_order(group, roles):
    """Stack the copies in the order their operands already lie in memory, if they are
    row slices of one array (a backward pass meets the steps in reverse); else by key."""
    for pos, role in enumerate(roles):
        if role == "b":
            cuts = [_row_slice(v.ins[pos]) for v in group]
            if all(c is not None and c[0] is cuts[0][0] for c in cuts):
                return [v for _, v in sorted(zip([c[1] for c in cuts], group), key=lambda p: p[0])]
    return sorted(group, key=lambda v: v.key)


def _merge(group, roles, memo):
    first = group[0]
    b = Builder(first.key, memo)
    ins = []
    for pos, role in enumerate(roles):
        if role == "s":
            ins.append(first.ins[pos])
        else:
            ins.append(stack_rows(b, [v.ins[pos] for v in group]))
    n = first.shape[0]
    shape = (n * len(group),) + first.shape[1:]
    merged = b.op(first.op, ins, shape, first.dtype, **first.params)
    for i, v in enumerate(group):
        v.op, v.ins, v.params = "getitem", [merged], {"index": (slice(i * n, (i + 1) * n),)}
    return merged


def batch_siblings(live, roots):
    """Merge groups of independent same-op Vals among `live` (the Vals reachable from roots,
    in topological order). Returns (copies merged, the live Vals afterwards)."""
    memo, merged, done, cache, number = {}, 0, set(), {}, {}
    vals = live
    while True:
        groups = {}
        for v in vals:
            hit = cache.get(v)      # NOTE: keyed by the Val itself (no id() call per lookup)
            if hit is None or hit[0] != v.op:
                r = _roles(v)
                # NOTE: each key as a small int, hashed once per Val however many rounds run
                hit = cache[v] = (v.op, r, number.setdefault(_key(v, r), len(number)) if r is not None else None)
            if hit[1] is not None:
                group = groups.get(hit[2])
                if group is None:
                    group = groups[hit[2]] = (hit[1], [])
                group[1].append(v)
        todo = [(k, r, vs) for k, (r, vs) in groups.items() if len(vs) >= MIN_COPIES and k not in done]
        if not todo:
            return merged, vals
        todo.sort(key=lambda t: t[2][0].key)
        bit = {v: 1 << g for g, (_, _, vs) in enumerate(todo) for v in vs}
        anc = _ancestry(vals, bit)
        progress = False
        for g, (k, roles, vs) in enumerate(todo):
            mine = 1 << g
            free = [v for v in vs if not anc[v] & mine]
            done.add(k)
            if len(free) < MIN_COPIES:
                continue
            _merge(_row_order(free, roles), roles, memo)
            merged += len(free)
            progress = True
            # Whatever depended on a copy of this group now waits for the inputs of all the
            # copies merged. (What depends on a copy left out depends on a merged one too:
            # the earliest copy on its path has no copy before it, so it was free.)
            grew = 0
            for v in free:
                grew |= anc[v]
            for v, m in anc.items():
                if m & mine:
                    anc[v] = m | grew
        if not progress:
            return merged, vals
        vals = ir.live_vals(roots)
