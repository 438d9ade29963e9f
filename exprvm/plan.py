"""Memory planning: liveness, in-place choice and buffer slots.

Walking the tape once, each instruction's output takes a slot: the slot of an
input that dies here when the kernel can run in place, else the best-fitting
free slot (grown if none is big enough), else a new slot. A slot is released
after the last instruction that reads its register or any view of it; outputs
are never released. The lower bound is the most bytes simultaneously live under
the same lifetimes, which no slot assignment can beat.
"""
import bisect

from .lowering import ALL

END = float("inf")


class _Pool:
    """Free slots kept sorted by capacity (one list per device), for best-fit allocation."""

    def __init__(self):
        self.caps = []          # capacity per slot
        self.devices = []       # device per slot
        self.free = {}          # device -> sorted [(capacity, slot)]

    def alloc(self, nbytes, device):
        free = self.free.setdefault(device, [])
        i = bisect.bisect_left(free, (nbytes, -1))
        if i < len(free):
            return free.pop(i)[1]
        if free:                # grow the largest free slot rather than add one
            _, s = free.pop()
            self.caps[s] = nbytes
            return s
        self.caps.append(nbytes)
        self.devices.append(device)
        return len(self.caps) - 1

    def release(self, slot):
        bisect.insort(self.free[self.devices[slot]], (self.caps[slot], slot))


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
        # Another operand reading the same memory through a different view would be clobbered.
        if any(root[j] == rid and j != rid for j in ins.ins):
            continue
        return rid
    return None


def plan(regs, instrs, outputs):
    """Assign slots to buffer registers. Returns (capacities, devices, lower bound in bytes)."""
    root, last = last_uses(regs, instrs, outputs)
    pool = _Pool()
    live = 0
    bound = 0
    for k, ins in enumerate(instrs):
        out = regs[ins.out]
        shared = _inplace_input(ins, k, regs, root, last, out)
        out.slot = regs[shared].slot if shared is not None else pool.alloc(out.nbytes, out.device)
        tmp_bytes = 0
        for t in ins.tmps:
            tr = regs[t]
            tr.slot = pool.alloc(tr.nbytes, tr.device)
            tmp_bytes += tr.nbytes
        if shared is None:
            live += out.nbytes
        bound = max(bound, live + tmp_bytes)
        for t in ins.tmps:
            pool.release(regs[t].slot)
        for rid in set(root[i] for i in ins.ins):
            r = regs[rid]
            if r.kind == "buffer" and last.get(rid) == k and rid != shared:
                pool.release(r.slot)
                live -= r.nbytes
        if out.id not in last:  # never read and not an output
            pool.release(out.slot)
            live -= out.nbytes
    return pool.caps, pool.devices, bound
