"""Memory planning: liveness, in-place choice and buffer slots.

Each register lives from the instruction that writes it to the last one that
reads it or any view of it (outputs: to the end of the run). An elementwise
instruction may write over an input that dies there (in place); the two then
form one allocation unit. The lower bound is the most bytes simultaneously live
under the same lifetimes, which no assignment can beat.

Units are packed by two sweeps over the tape, forward and backward in time (a unit
takes the best-fitting free block when its first instruction comes and gives it back
after its last; freed neighbours merge), in O(n log n). Only when the better sweep lands
above GOOD_ENOUGH times the bound are greedy orders tried (biggest unit first, each at
the best-fitting gap among the placed units it overlaps in time), and only where a unit
overlaps at most OVERLAPS_PER_UNIT others on average: their work grows with the number
of units live at once, which on an unrolled recurrence (its residuals kept for the
backward pass) makes them quadratic, and costs more than the rest of the compile long
before that.
"""
import bisect
import heapq

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


def _place(units, order, overlaps, best_fit=True):
    """Offsets for units placed in `order` (indices): each goes into the smallest (best_fit)
    or lowest gap left by the units already placed that overlap it in time (overlaps[i]:
    the indices of the units overlapping unit i), else on top."""
    spans = [None] * len(units)         # (offset, end) per placed unit
    offsets, top = [0] * len(units), 0
    for i in order:
        size, a, b = units[i]
        al = _align(size)
        best, best_room, reach = 0, None, 0
        for lo, hi in sorted(spans[j] for j in overlaps[i] if spans[j] is not None):
            room = lo - reach
            if room >= size and (best_room is None or (best_fit and room < best_room)):
                best, best_room = reach, room
            reach = max(reach, -(-hi // al) * al)
        off = best if best_room is not None else reach
        spans[i] = (off, off + size)
        offsets[i] = off
        top = max(top, off + size)
    return offsets, top


def _up(x, al):
    return -(-x // al) * al


class _Free:
    """The free blocks [lo, hi) below the top of an arena being swept: by address (to
    merge neighbours) and by size (best fit), each a sorted list."""

    def __init__(self):
        self.los, self.his = [], []             # by address
        self.sizes = []                         # (size, lo)
        self.top = 0

    def _remove(self, i):
        lo, hi = self.los.pop(i), self.his.pop(i)
        del self.sizes[bisect.bisect_left(self.sizes, (hi - lo, lo))]

    def _add(self, lo, hi):
        if lo >= hi:
            return
        i = bisect.bisect_left(self.los, lo)
        self.los.insert(i, lo)
        self.his.insert(i, hi)
        bisect.insort(self.sizes, (hi - lo, lo))

    def release(self, lo, hi):
        i = bisect.bisect_left(self.los, lo)
        if i < len(self.los) and self.los[i] == hi:          # the block after: merge
            hi = self.his[i]
            self._remove(i)
        if i > 0 and self.his[i - 1] == lo:                 # the block before: merge
            lo = self.los[i - 1]
            self._remove(i - 1)
        if hi >= self.top:                                  # the top falls back
            self.top = lo
        else:
            self._add(lo, hi)

    def take(self, size, al):
        """The offset of `size` bytes aligned to `al`: the smallest free block it fits in
        (alignment padding included), else the top."""
        j = bisect.bisect_left(self.sizes, (size, -1))
        while j < len(self.sizes):
            bsize, lo = self.sizes[j]
            off = _up(lo, al)
            if off + size <= lo + bsize:
                self._remove(bisect.bisect_left(self.los, lo))
                self._add(lo, off)
                self._add(off + size, lo + bsize)
                return off
            j += 1
        off = _up(self.top, al)
        self._add(self.top, off)
        self.top = off + size
        return off


def _sweep(units):
    """Offsets for units in one pass over the tape: at each instruction the units whose
    last use has passed are freed (merging with free neighbours), then the units starting
    there are placed, biggest first, each in the best-fitting free block or on top.
    O(n log n) in the number of units (see the module docstring)."""
    n = len(units)
    starts = sorted(range(n), key=lambda i: (units[i][1], -units[i][0], i))
    ends = []                                           # heap of (last use, index)
    free = _Free()
    offsets, peak = [0] * n, 0
    for i in starts:
        size, a, b = units[i]
        while ends and ends[0][0] < a:
            _, j = heapq.heappop(ends)
            free.release(offsets[j], offsets[j] + units[j][0])
        if size:
            offsets[i] = free.take(size, _align(size))
            peak = max(peak, free.top)
        heapq.heappush(ends, (b, i))
    return offsets, peak


def _sweeps(units):
    """The better of a sweep forward and one backward in time (a value made late and read
    by many, such as a concatenation of every step's gradient, is placed first then,
    before the others fragment the arena)."""
    fwd = _sweep(units)
    end = max((u[2] for u in units), default=0)
    bwd = _sweep([(size, end - b, end - a) for size, a, b in units])
    return fwd if fwd[1] <= bwd[1] else bwd


def overlap_count(units):
    """How many (ordered) pairs of distinct units are live at a common instruction."""
    if not units:
        return 0
    first = np.sort(np.array([u[1] for u in units], np.int64))
    last = np.sort(np.array([u[2] for u in units], np.int64))
    a = np.array([u[1] for u in units], np.int64)
    b = np.array([u[2] for u in units], np.int64)
    per = np.searchsorted(first, b, "right") - np.searchsorted(last, a, "left")
    return int(per.sum()) - len(units)


def _overlaps(units):
    """overlaps[k]: the indices of the units overlapping unit k in time (a sweep over
    starts with a heap of ends: O(n log n) plus the pairs)."""
    n = len(units)
    adj = [[] for _ in range(n)]
    active, ends = set(), []
    for i in sorted(range(n), key=lambda i: units[i][1]):
        a = units[i][1]
        while ends and ends[0][0] < a:
            active.discard(heapq.heappop(ends)[1])
        for j in active:
            adj[i].append(j)
            adj[j].append(i)
        active.add(i)
        heapq.heappush(ends, (units[i][2], i))
    return adj


def _by_breadth(units):
    """Units met at the busiest instructions first (then biggest first)."""
    n = max(u[2] for u in units) + 2
    live = np.zeros(n, np.int64)
    for u in units:
        live[u[1]:u[2] + 1] += u[0]
    return sorted(range(len(units)), key=lambda i: (-int(live[units[i][1]:units[i][2] + 1].max()),
                                                     -units[i][0], units[i][1]))


def _by_size(units):
    return sorted(range(len(units)), key=lambda i: (-units[i][0], units[i][1]))


# (order, best fit?): greedy by size usually wins; the others rescue the graphs it packs badly.
STRATEGIES = ((_by_size, True), (_by_size, False), (_by_breadth, True))
GOOD_ENOUGH = 1.02
OVERLAPS_PER_UNIT = 64      # the greedy orders run only where units overlap fewer others


def _pack(units, bound):
    """(units, offsets): the sweeps' packing, or a greedy order's when the sweeps land above
    GOOD_ENOUGH times the bound and the graph is small enough for them."""
    spans = [(u[0], u[1], u[2]) for u in units]
    offsets, size = _sweeps(spans)
    if size <= GOOD_ENOUGH * bound or overlap_count(spans) > OVERLAPS_PER_UNIT * len(spans):
        return offsets
    adj = _overlaps(spans)
    for order, best_fit in STRATEGIES:
        mine, top = _place(spans, order(spans), adj, best_fit)
        if top < size:
            offsets, size = mine, top
        if size <= GOOD_ENOUGH * bound:
            break
    return offsets


def _color(units, regs, slots, bases):
    """Device buffers cannot be sliced: units share a buffer only if shape and dtype agree
    and their lifetimes do not overlap (interval colouring, earliest start first)."""
    free = {}                           # (shape, dtype) -> heap of (last use, slot)
    for u in sorted(units, key=lambda u: u[1]):
        r = regs[u[4][0]]
        key = (r.shape, r.dtype.str)
        pool = free.setdefault(key, [])
        if pool and pool[0][0] < u[1]:
            _, s = heapq.heappop(pool)
        else:
            s = len(slots)
            slots.append(u[0])
            bases.append(0)
        heapq.heappush(pool, (u[2], s))
        for rid in u[4]:
            regs[rid].slot = s


def plan(regs, instrs, outputs):
    """Assign every buffer register an offset in its device's arena.

    Returns (bytes per slot, slot start offsets, lower bound in bytes); a slot is
    one start address in a device's arena (packing: see the module docstring).
    """
    units = _units(regs, instrs, outputs)
    slot_of, slots, bases = {}, [], []
    for device in sorted({u[3] for u in units}):
        mine = [u for u in units if u[3] == device]
        if device != "cpu":
            _color(mine, regs, slots, bases)
            continue
        offsets = _pack(mine, lower_bound(mine))
        for u, off in sorted(zip(mine, offsets), key=lambda p: p[1]):
            s = slot_of.setdefault((device, off), len(slots))
            if s == len(slots):
                slots.append(0)
                bases.append(off)
            slots[s] = max(slots[s], u[0])
            for rid in u[4]:
                regs[rid].slot = s
    return slots, bases, lower_bound(units)
