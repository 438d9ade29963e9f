"""The compiled Program: plain data (registers, instructions, buffer plan), its
disassembly, and the soundness checker.

A register holds one value. Its memory is one of:
  buffer  a planned slot (the compiler reuses slots once their values are dead)
  input   a private buffer the machine copies feeds into
  param   the parameter's own `.value` array (bound, never written)
  const   a constant array known at compile time
  view    a view (reshape, transpose, broadcast, basic index) of another register

Instructions name their kernel and backend; the machine turns each one into a
prebound callable when it binds the program to arrays.
"""
import bisect
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..core import LEAF_OPS as LEAF_KINDS  # a leaf register's kind is its node's op
from ..errors import CompileError



# NOTE: slots: a compile makes a register and an instruction per value; slotted, they are
# smaller and quicker to make, and a big program's compile touches less memory
@dataclass(eq=False, slots=True)
class Register:
    id: int
    shape: tuple
    dtype: np.dtype
    kind: str                       # "buffer", "input", "param", "const" or "view"
    nodes: list = field(default_factory=list)   # graph nodes whose value this is
    slot: int = -1                  # buffer registers: the slot (a start address) holding them
    base: int = -1                  # view registers: the register viewed
    view: Optional[tuple] = None    # view registers: (op name, params); OPS[op].impl makes it
    const: Optional[np.ndarray] = None
    device: str = "cpu"
    scratch: bool = False           # a kernel's temporary, live for one instruction
    nbytes: int = field(init=False, repr=False)

    def __post_init__(self):
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize

    @property
    def label(self):
        if self.nodes:
            return self.nodes[0].label
        return "scratch" if self.scratch else f"r{self.id}"

    def describe(self):
        where = {"buffer": f"slot {self.slot}", "view": f"view of r{self.base}",
                 "external": "the loop's"}.get(self.kind, self.kind)
        dev = "" if self.device == "cpu" else f" on {self.device}"
        names = ", ".join(n.label for n in self.nodes[:3]) + (" ..." if len(self.nodes) > 3 else "")
        return (f"r{self.id}: {self.dtype.name}{list(self.shape)} {self.nbytes} B, {where}{dev}"
                + (f"  ; {names}" if names else ""))


@dataclass(eq=False, slots=True)
class Instr:
    op: str                         # op name, or "copy", "to_device", "to_host"
    ins: tuple                      # input register ids
    out: int                        # output register id
    node: object = None             # the graph node computed (None for copies and transfers)
    kernel: str = "numpy"           # backend that runs it: "numpy", "c", "cuda"
    build: Optional[Callable] = None  # build(ins, out, tmps) -> (fn, args); bound by the machine
    tmps: tuple = ()                # scratch register ids
    inplace: object = ()            # input positions the output may alias exactly, or "all"
    allocates: bool = False         # the kernel allocates temporaries on each call
    note: str = ""                  # shown when there is no node ("optimizer", ...)
    bodies: tuple = ()              # a loop or a branch: its nested Programs
    meta: Optional[dict] = None     # a loop's description for its runner (machines/loops.py)
    after_bind: Optional[Callable] = None   # a loop: (fn, args) -> (fn, args) once bound
                                            # (the thread policy's wrapper; compiler/threads.py)
    members: tuple = ()             # a value of stored members: each one's index in out
    redirect: tuple = ()            # ((member, register id, index or None), ...): members
                                    # written into that register (at that basic index) instead
                                    # (a loop body's outputs: compiler/control.py)

    def bind(self, arrays):
        """(fn, args) running this (loop-free) instruction over `arrays`, indexed by
        register id."""
        ins, tmps = [arrays[i] for i in self.ins], [arrays[t] for t in self.tmps]
        if self.redirect:
            members = {q: arrays[r] if index is None else arrays[r][index] for q, r, index in self.redirect}
            return self.build(ins, arrays[self.out], tmps, members)
        return self.build(ins, arrays[self.out], tmps)

    def redirected(self):
        """{register id: the members written into it}, in the order given."""
        out = {}
        for q, r, _ in self.redirect:
            out.setdefault(r, []).append(q)
        return out

    def writes(self):
        """The registers this instruction writes: its output and redirected members."""
        return (self.out, *dict.fromkeys(r for _, r, _ in self.redirect))

    def may_alias(self, pos):
        return self.inplace == "all" or pos in self.inplace

    def text(self):
        if self.bodies:
            tag = f"[{self.meta['tag']}]" if self.meta and self.meta.get("tag") else ""
            ins = ", ".join(f"r{i}" for i in self.ins)
            return f"r{self.out} = {self.op}{tag} {ins}".rstrip()
        tag = "" if self.kernel == "numpy" or self.op in ("to_device", "to_host") else f"[{self.kernel}]"
        ins = ", ".join(f"r{i}" for i in self.ins)
        # members written elsewhere show first: r13{0: r16, 1: r17} = fused ...
        moved = "{" + ", ".join(f"{_span(qs)}: r{r}" for r, qs in self.redirected().items()) + "}" \
            if self.redirect else ""
        return f"r{self.out}{moved} = {self.op}{tag} {ins}".rstrip()

    def comment(self):
        if self.node is None:
            return self.note
        return f"{self.node.label} ({self.node.site})" + (f" {self.note}" if self.note else "")


class Program:
    """A linear tape of instructions over numbered registers, with its buffer plan."""

    def __init__(self, registers, instrs, slots, outputs, lower_bound, notes=(),
                 values=(), grads=(), index=None, bases=None):
        self.registers = registers      # list of Register, index == id
        self.instrs = instrs            # list of Instr, in execution order
        self.slots = list(slots)        # bytes per slot
        # Where each slot starts in its device's arena. Without bases every slot is a
        # separate buffer per device (what a hand-written Program means).
        self.bases = bases
        used = {}                       # device -> slots its buffers use
        self.arenas = {}                # device -> bytes planned
        for r in registers:
            if r.kind == "buffer":
                used.setdefault(r.device, set()).add(r.slot)
                if bases is not None and r.device == "cpu":
                    end = bases[r.slot] + r.nbytes
                    self.arenas[r.device] = max(self.arenas.get(r.device, 0), end)
        for d, ss in used.items():
            if bases is None or d != "cpu":     # separate buffers, one per slot
                self.arenas[d] = sum(self.slots[s] for s in ss)
        self.outputs = outputs          # register ids live at the end of a run
        self.lower_bound = lower_bound  # max bytes of simultaneously live buffer registers
        self.notes = list(notes)        # what the optimizer did, for the disassembly
        self.values = list(values)      # (node, register) whose value lands on node.value
        self.grads = list(grads)        # (wrt node, register) whose value lands on wrt.grad
        self.index = index or {}        # every node with a register -> register id
        self.folded = []                # (node, value): constants no instruction needs
        # A loop body's Program (compiler/control.py): the register of each body input
        # (None: unread) and of each body output (kind "external"), in the body's order.
        self.inputs = None
        self.externals = None
        # Tiered compilation (compiler/tiers.py): "fused", "unfused" (its fused kernels
        # build in the background; upgrade is the tiers.Upgrade) or "single" (no fusion).
        self.tier = "single"
        self.upgrade = None

    def upgraded(self):
        """The fused Program to run instead of this one, once its background build is done
        (same results, to the last bit, for the ops whose unfused kernels share the fused
        ones' math: tiers.py); None until then, and for a program that is final."""
        up = self.upgrade
        return up.program if up is not None else None

    def tier_note(self):
        """The disassembly's line saying which tier this program is."""
        if self.tier == "unfused" and self.upgrade is not None:
            return f"tier: unfused ({self.upgrade.describe()})"
        return f"tier: {self.tier}"

    def __len__(self):
        return len(self.instrs)

    def __repr__(self):
        kernels = ", ".join(f"{k} {v}" for k, v in sorted(self.kernels().items()))
        return (f"<Program: {len(self.instrs)} instructions ({kernels}), {len(self.registers)} registers, "
                f"{self.peak_bytes} B planned; print() it for the disassembly>")

    def __iter__(self):
        return iter(self.instrs)

    @property
    def peak_bytes(self):
        """Bytes planned for intermediate values (all arenas together, loop bodies' too)."""
        return int(sum(self.arenas.values())) + sum(b.peak_bytes for b in self.bodies())

    def bodies(self):
        """The nested Programs of this program's loops and branches (one level down)."""
        return [b for ins in self.instrs for b in ins.bodies]

    @property
    def leaf_bytes(self):
        return int(sum(r.nbytes for r in self.registers if r.kind == "input"))

    def memory(self, r):
        """(arena key, first byte, end byte) of a buffer register."""
        if r.kind == "external":        # memory of its own, given by the enclosing loop
            return ("external", r.id), 0, r.nbytes
        if self.bases is None or r.device != "cpu":
            return (r.device, r.slot), 0, r.nbytes
        lo = self.bases[r.slot]
        return r.device, lo, lo + r.nbytes

    def overlap(self, a, b):
        return _overlaps(self.memory(a), self.memory(b))

    def root(self, rid):
        """The register owning the memory that register rid reads."""
        r = self.registers[rid]
        while r.kind == "view":
            r = self.registers[r.base]
        return r

    def folded_constants(self):
        """(op node, value) of every op node the compiler folded into a constant, whether
        an instruction reads it or not (a watch must still see what such a node made)."""
        out = list(self.folded)
        for r in self.registers:
            if r.kind == "const":
                out.extend((n, r.const) for n in r.nodes if not n.is_leaf)
        return out

    def kernels(self):
        """How many instructions each backend runs."""
        out = {}
        for ins in self.instrs:
            out[ins.kernel] = out.get(ins.kernel, 0) + 1
        return out

    def __str__(self):
        return "\n".join(self.lines())

    def lines(self, indent=""):
        """The disassembly, one line each; loop bodies indented under their instruction."""
        what = "program" if not indent else "body"
        lines = [f"{indent}; {what}: {len(self.instrs)} instructions, {len(self.registers)} registers"]
        width = min(max([len(i.text()) for i in self.instrs] + [10]), 40) + 2
        for ins in self.instrs:
            c = ins.comment()
            text = ins.text()
            if len(text) > width + 20:      # a long operand list (a concatenation)
                text = text[:width + 16] + " ..."
            lines.append(indent + (text.ljust(width) + (f"; {c}" if c else "")).rstrip())
            for k, body in enumerate(ins.bodies):
                names = ins.meta.get("bodies", ()) if ins.meta else ()
                label = names[k] if k < len(names) else f"body {k}"
                lines.append(f"{indent}  {{ {label}")
                lines.extend(body.lines(indent + "    "))
                lines.append(f"{indent}  }}")
        if self.inputs is not None:
            lines.append(indent + "; inputs " + ", ".join("-" if r is None else f"r{r}" for r in self.inputs)
                         + "; outputs " + ", ".join(f"r{r}" for r in self.externals or ()))
        lines.append(indent + "; registers")
        for r in self.registers:
            lines.append(indent + ";   " + r.describe())
        arenas = ", ".join(f"{d} {b} B" for d, b in self.arenas.items())
        lines.append(f"{indent}; planned {self.peak_bytes} B ({arenas}); liveness lower bound "
                     f"{self.lower_bound} B; inputs {self.leaf_bytes} B")
        for n in self.notes:
            lines.append(f"{indent}; {n}")
        if not indent:
            lines.append(f"; {self.tier_note()}")
        return lines

    # -- soundness ---------------------------------------------------------------
    def verify(self):
        """Prove that every read sees the value its register was given.

        Walks the tape keeping, per arena, the byte ranges that still hold the value
        of the register that last wrote them. Raises CompileError if an instruction
        (or the end of the run, for outputs) reads a register whose bytes were
        overwritten since it was produced, writes a leaf, or overlaps its output with
        an input it cannot share.
        """
        regs = self.registers
        valid = {}                      # arena -> _Ranges of registers whose bytes are intact
        produced = set()
        read_last = None                # register owning memory -> last instruction reading it
        for k, ins in enumerate(self.instrs):
            where = _Where(k, ins)      # NOTE: formatted only for an error message
            for rid in ins.ins:
                self._check_read(rid, valid, produced, where)
            out = regs[ins.out]
            if ins.op == "update" and out.kind == "param":
                # a state parameter's new value, written in place: no later read may see it
                if read_last is None:   # NOTE: worked out only for a program with updates
                    read_last = self._last_reads()
                if read_last.get(out.id, -1) > k:
                    raise CompileError(f"{where} updates r{out.id} before the end of the tape")
                if out.id in produced:
                    raise CompileError(f"{where} updates r{out.id} a second time")
                produced.add(out.id)
                continue
            if out.kind not in ("buffer", "external") or out.scratch:
                raise CompileError(f"{where} writes r{out.id}, a {out.kind} register")
            if out.id in produced:
                raise CompileError(f"{where} writes r{out.id} a second time")
            mem = self.memory(out)
            for pos, rid in enumerate(ins.ins):
                src = self.root(rid)
                if src.kind != "buffer":
                    continue
                smem = self.memory(src)
                if _overlaps(smem, mem):
                    exact = rid == src.id and smem == mem and src.shape == out.shape and src.dtype == out.dtype
                    if not (exact and ins.may_alias(pos)):
                        raise CompileError(f"{where}: output r{out.id} overlaps input r{rid} "
                                           f"and the kernel cannot run in place")
            for t in ins.tmps:
                tr = regs[t]
                clash = [i for i in ins.ins if self.root(i).kind == "buffer" and self.overlap(self.root(i), tr)]
                if tr.kind != "buffer" or not tr.scratch or clash or self.overlap(tr, out):
                    raise CompileError(f"{where}: scratch r{t} overlaps an operand")
                self._write(valid, tr)
            self._write(valid, out)
            produced.add(out.id)
            for rid, qs in ins.redirected().items():
                self._check_members(where, ins, rid, qs, produced)
                self._write(valid, regs[rid])
                produced.add(rid)
        for rid in self.outputs:
            self._check_read(rid, valid, produced, f"output r{rid}", " at the end of the run")
        for k, ins in enumerate(self.instrs):
            for b, body in enumerate(ins.bodies):
                try:
                    body.verify()
                except CompileError as e:
                    raise CompileError(f"{_Where(k, ins)}, body {b}: {e}") from None
        if self.externals is not None:
            kinds = [self.registers[r].kind for r in self.externals]
            if any(k != "external" for k in kinds):
                raise CompileError("a body's outputs must be external registers")
        return True

    def _check_members(self, where, ins, rid, qs, produced):
        """Members qs of ins written into register rid: an unwritten loop output that they
        cover exactly once, element by element."""
        moved = self.registers[rid]
        if moved.kind != "external" or rid in produced or any(not 0 <= q < len(ins.members) for q in qs):
            raise CompileError(f"{where} writes member(s) {_span(qs)} into r{rid}, which is not "
                               "an unwritten loop output")
        count = np.zeros(moved.shape, np.int8)
        for q, r, index in ins.redirect:
            if r == rid:
                count[... if index is None else index] += 1
        if not (count == 1).all():
            raise CompileError(f"{where}: members {_span(qs)} do not cover r{rid} exactly once")

    def _write(self, valid, reg):
        key, lo, hi = self.memory(reg)
        valid.setdefault(key, _Ranges()).write(reg.id, lo, hi)

    def _last_reads(self):
        """{register owning memory: the last instruction reading it} (updates not counted)."""
        read_last = {}
        for k, ins in enumerate(self.instrs):
            if ins.op != "update":
                for i in ins.ins:
                    if 0 <= i < len(self.registers):
                        read_last[self.root(i).id] = k
        return read_last

    def _check_read(self, rid, valid, produced, at, what=None):
        """what: how the error names the read (None: an instruction's read of rid)."""
        if not 0 <= rid < len(self.registers) or self.registers[rid].kind not in _READABLE:
            self._explain_read(rid, valid, produced, f"{at}{what or f' reads r{rid}'}")
            return
        src = self.root(rid)
        if src.kind in LEAF_KINDS:
            return
        if src.kind in ("buffer", "external") and not src.scratch and src.id in produced:
            key, lo, hi = self.memory(src)
            if not src.nbytes or valid[key].holds(src.id, lo, hi):
                return
        self._explain_read(rid, valid, produced, f"{at}{what or f' reads r{rid}'}")

    def _explain_read(self, rid, valid, produced, where):
        if not 0 <= rid < len(self.registers):
            raise CompileError(f"{where}: no such register")
        src = self.root(rid)
        if src.kind in LEAF_KINDS:
            return
        if src.kind not in ("buffer", "external") or src.scratch:
            raise CompileError(f"{where}: r{src.id} is a {src.kind} register")
        if src.id not in produced:
            raise CompileError(f"{where}: r{src.id} ({src.label}) is read before it is produced")
        key, lo, hi = self.memory(src)
        if src.nbytes and not valid[key].holds(src.id, lo, hi):
            h = valid[key].clobbered_by.get(src.id)
            by = f"r{h} ({self.registers[h].label})" if h is not None else "another register"
            raise CompileError(f"{where}: the bytes of r{src.id} ({src.label}) were overwritten by {by}")


_READABLE = ("buffer", "view", "external") + LEAF_KINDS


class _Where:
    """`instruction k `text``, formatted on demand."""

    __slots__ = ("k", "ins")

    def __init__(self, k, ins):
        self.k, self.ins = k, ins

    def __str__(self):
        return f"instruction {self.k} `{self.ins.text()}`"


class _Ranges:
    """Disjoint byte ranges [lo, hi) of one arena, each still holding one register's value."""

    def __init__(self):
        self.los, self.his, self.rids = [], [], []
        self.clobbered_by = {}

    def write(self, rid, lo, hi):
        if lo == hi:
            return
        i = bisect.bisect_right(self.his, lo)       # first range ending after lo
        j = i
        while j < len(self.los) and self.los[j] < hi:
            self.clobbered_by[self.rids[j]] = rid
            j += 1
        self.los[i:j], self.his[i:j], self.rids[i:j] = [lo], [hi], [rid]

    def holds(self, rid, lo, hi):
        i = bisect.bisect_left(self.los, lo)
        return i < len(self.los) and self.rids[i] == rid and self.los[i] == lo and self.his[i] == hi


def _overlaps(a, b):
    """Do two (arena key, first byte, end byte) ranges share a byte?"""
    (ka, la, ha), (kb, lb, hb) = a, b
    return ka == kb and la < ha and lb < hb and la < hb and lb < ha


def _span(qs):
    """Members as the disassembly names them: 3, or 1-4 for consecutive ones."""
    qs = list(qs)
    if len(qs) > 1 and qs == list(range(qs[0], qs[0] + len(qs))):
        return f"{qs[0]}-{qs[-1]}"
    return ",".join(str(q) for q in qs)
