"""Memory planning: liveness, in-place choice and buffer slots.

Each register lives from the instruction that writes it to the last one that
reads it or any view of it (outputs: to the end of the run). An elementwise
instruction may write over an input that dies there (in place); the two then
form one allocation unit. Units are packed into slots greedily by size; the
lower bound is the most bytes simultaneously live under the same lifetimes,
which no assignment can beat.
"""
import numpy as np

from .lowering import ALL

END = float("inf")


def _roots(regs):
    root = list(range(len(regs)))
    for r in regs:              # views always come after their base
        if r.kind == "view":
            root[r.id] = root[r.base]
    return root


def last_uses(regs, instrs, outputs):
    """Last instruction reading each buffer register (through any view); END for outputs."""
    root = _roots(regs)
    last = {}
    for k, ins in enumerate(instrs):
        for rid in ins.ins:
            last[root[rid]] = k
    for rid in outputs:
        last[root[rid]] = END
    return root, last


def _inplace_input(ins, k, regs, root, last, out):
    allowed = range(len(ins.ins)) if ins.inplace == ALL else ins.inplace
    for p in allowed:
        rid = ins.ins[p]
        x = regs[rid]
        if (x.kind != "buffer" or last.get(rid) != k or x.shape != out.shape or x.dtype != out.dtype
                or x.device != out.device):
            continue
        # NOTE: every operand position counts: the same register at a position the kernel
        # may not alias (where(c, u, u) aliases only its third), or another view of the
        # same memory, would be read after the output overwrote it.
        if any(root[j] == rid and (j != rid or not ins.may_alias(q)) for q, j in enumerate(ins.ins)):
            continue
        return rid
    return None


def _units(regs, instrs, outputs):
    """Allocation units: [bytes, first, last, device, register ids]. A unit is a register plus
    the outputs that took its buffer in place; scratch registers are units of one instruction."""
    root, last = last_uses(regs, instrs, outputs)
    n = len(instrs)
    units, unit_of = [], {}
    for k, ins in enumerate(instrs):
        out = regs[ins.out]
        # NOTE: an update writes a parameter's own array, a loop body's output memory the
        # loop gives (kind "external"): neither is planned here (their scratch is).
        if out.kind == "buffer":
            shared = _inplace_input(ins, k, regs, root, last, out)
            if shared is not None:
                u = unit_of[shared]
                u[4].append(out.id)
            else:
                u = [out.nbytes, k, k, out.device, [out.id]]
                units.append(u)
            unit_of[out.id] = u
        for t in ins.tmps:
            units.append([regs[t].nbytes, k, k, regs[t].device, [t]])
    for u in units:
        for rid in u[4]:
            end = last.get(rid, u[1])
            u[2] = max(u[2], n if end == END else end)
    return units


def lower_bound(units):
    """Most bytes live at once: no assignment of buffers to units can use less."""
    delta = {}
    for size, a, b, _, _ in units:
        delta[a] = delta.get(a, 0) + size
        delta[b + 1] = delta.get(b + 1, 0) - size
    live = best = 0
    for k in sorted(delta):
        live += delta[k]
        best = max(best, live)
    return best


def _align(size):
    """Cache lines for big buffers; else the largest of 8, 4, 2, 1 dividing the size (so
    every element stays aligned to its itemsize without padding small scalars)."""
    if size >= 4096:
        return 64
    return next(a for a in (8, 4, 2, 1) if size % a == 0)


def _place(units, best_fit=True):
    """Offsets for units in the given order: each goes into the smallest (best_fit) or
    lowest gap left by the units already placed that overlap it in time, else on top."""
    n = len(units)
    first = np.empty(n, np.int64)
    last = np.empty(n, np.int64)
    spans = []                          # (offset, end) per placed unit
    offsets, top = [], 0
    for k, (size, a, b) in enumerate(units):
        al = _align(size)
        busy = np.flatnonzero((first[:k] <= b) & (last[:k] >= a)).tolist() if k else ()
        best, best_room, reach = 0, None, 0
        for lo, hi in sorted(spans[j] for j in busy):
            room = lo - reach
            if room >= size and (best_room is None or (best_fit and room < best_room)):
                best, best_room = reach, room
            reach = max(reach, -(-hi // al) * al)
        off = best if best_room is not None else reach
        first[k], last[k] = a, b
        spans.append((off, off + size))
        offsets.append(off)
        top = max(top, off + size)
    return offsets, top


def _by_breadth(units):
    """Units met at the busiest instructions first (then biggest first)."""
    n = max(u[2] for u in units) + 2
    live = np.zeros(n, np.int64)
    for u in units:
        live[u[1]:u[2] + 1] += u[0]
    return sorted(units, key=lambda u: (-int(live[u[1]:u[2] + 1].max()), -u[0], u[1]))


# (order, best fit?): greedy by size usually wins; the others rescue the graphs it packs badly.
STRATEGIES = ((lambda us: sorted(us, key=lambda u: (-u[0], u[1])), True),
              (lambda us: sorted(us, key=lambda u: (-u[0], u[1])), False),
              (_by_breadth, True))
GOOD_ENOUGH = 1.02


def _pack(units, bound):
    best = None
    for order, best_fit in STRATEGIES:
        mine = order(units)
        offsets, size = _place([(u[0], u[1], u[2]) for u in mine], best_fit)
        if best is None or size < best[2]:
            best = (mine, offsets, size)
        if size <= GOOD_ENOUGH * bound:
            break
    return best[0], best[1]


def _color(units, regs, slots, bases):
    """Device buffers cannot be sliced: units share a buffer only if shape and dtype agree
    and their lifetimes do not overlap (interval colouring, earliest start first)."""
    free = {}                           # (shape, dtype) -> [(last use, slot)]
    for u in sorted(units, key=lambda u: u[1]):
        r = regs[u[4][0]]
        key = (r.shape, r.dtype.str)
        pool = free.setdefault(key, [])
        pool.sort()
        if pool and pool[0][0] < u[1]:
            _, s = pool.pop(0)
        else:
            s = len(slots)
            slots.append(u[0])
            bases.append(0)
        pool.append((u[2], s))
        for rid in u[4]:
            regs[rid].slot = s


def plan(regs, instrs, outputs):
    """Assign every buffer register an offset in its device's arena.

    Returns (bytes per slot, slot start offsets, lower bound in bytes); a slot is
    one start address in a device's arena. Greedy by size: the
    biggest units are placed first, each at the best-fitting free offset among
    the units whose lifetimes overlap its own (other orders are tried when that
    packs more than 2% above the lower bound).
    """
    units = _units(regs, instrs, outputs)
    slot_of, slots, bases = {}, [], []
    for device in sorted({u[3] for u in units}):
        mine = [u for u in units if u[3] == device]
        if device != "cpu":
            _color(mine, regs, slots, bases)
            continue
        mine, offsets = _pack(mine, lower_bound(mine))
        for u, off in sorted(zip(mine, offsets), key=lambda p: p[1]):
            s = slot_of.setdefault((device, off), len(slots))
            if s == len(slots):
                slots.append(0)
                bases.append(off)
            slots[s] = max(slots[s], u[0])
            for rid in u[4]:
                regs[rid].slot = s
    return slots, bases, lower_bound(units)
