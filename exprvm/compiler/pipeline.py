"""Graph -> Program: choose what to compute, optimize, lower to registers and
instructions, plan the buffers, verify.

    prog = compile_graph(g, outputs=[cost])
    print(prog)            # disassembly
    prog.verify()          # soundness proof of the buffer plan

What gets compiled: the `outputs` (default: every node of the graph) plus the
gradient nodes ev.grad made for any cost among them. Values that stay readable
after a run ("results"): the outputs given, or by default the graph's sinks,
its costs and its gradients; other intermediates share buffers and get no value.

The pipeline, each step linear in the graph's size:
  ir.build        a private copy of the graph; constants folded, exact identities
                  (x * 1, reshape to the same shape, ...) dropped
  ir.live_vals    dead code removed, topological order
  optimize        fused gradient kernels, batching of per-step ops, merged sums
  placement       which instructions run on a GPU (device= / use_cuda_for=)
  _Emitter        registers, views taken once at bind time, kernels chosen per
                  instruction (lowering.py, backends.py), transfers inserted
  plan            liveness, in-place, arena offsets; Program.verify checks it
"""
import gc

import numpy as np

from . import ir
from ..errors import CompileError
from ..core import ancestors
from .lowering import Lowered, generic, is_basic_index, lower
from ..core import OPS
from .optimize import optimize
from .placement import device_kernel_ops, lower_cuda, place
from .plan import plan
from .program import Instr, Program, Register


def select(g, outputs, grads=True, keep=()):
    """(targets, results): nodes to compute and nodes whose values must survive the run."""
    if outputs is None:
        used = {x.id for n in g.nodes for x in n.inputs}
        results = [n for n in g.nodes if not n.is_leaf and n.id not in used]
        results += [c for c in g.costs.values()]
        # NOTE: intermediates are computed as the results' ancestors, not as roots of their
        # own, so that what a fusion leaves unread is dropped as dead code.
        targets = list(results)
    else:
        results = list(outputs)
        targets = list(results)
    if grads and g.grads:
        present = {n.id for n in ancestors(targets)}
        extra = [gn for w, gn in g.grads.items() if g.costs[w].id in present]
        results += extra
        targets += extra
    results += list(keep)
    targets += list(keep)
    for n in targets:
        if getattr(n, "graph", None) is not g:
            raise CompileError(f"output {n!r} is not a node of graph {g.name!r}")
    return targets, list({n.id: n for n in results}.values())


_FAKES = {}


def _fake(shape, dtype):
    """An array with real strides and no real memory, to ask numpy whether a view exists."""
    # NOTE: never read from it: only its shape and strides are real.
    key = (shape, dtype)
    f = _FAKES.get(key)
    if f is None:
        if len(_FAKES) > 4096:
            _FAKES.clear()
        f = _FAKES[key] = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape,
                                                          _c_strides(shape, np.dtype(dtype).itemsize))
    return f


def _c_strides(shape, itemsize):
    out, acc = [], itemsize
    for s in reversed(shape):
        out.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(out))


def _reshapes_as_view(a):
    try:
        np.reshape(a, -1, copy=False)
        return True
    except ValueError:
        return False


def _as_view(v, base):
    """The view of fake `base` that op v makes, or None if numpy would copy."""
    p = v.params
    if v.op == "reshape":
        try:
            return np.reshape(base, p["shape"], copy=False)
        except ValueError:
            return None
    if v.op == "getitem" and not is_basic_index(p["index"]):
        return None
    return OPS[v.op].impl(base, **p)


class _Emitter:
    def __init__(self, backend):
        self.backend = backend
        self.placement = {}
        self.regs = []
        self.instrs = []
        self.fake = {}
        self.moved = {}             # (register, device) -> its copy there

    def reg(self, shape, dtype, kind, **kw):
        r = Register(len(self.regs), tuple(shape), np.dtype(dtype), kind, **kw)
        self.regs.append(r)
        if kind in ("buffer", "input", "param"):
            self.fake[r.id] = _fake(r.shape, r.dtype)
        return r

    def val(self, v):
        if v.kind in ("input", "param"):
            r = self.reg(v.shape, v.dtype, v.kind)
        elif v.kind == "const":
            r = self.reg(v.shape, v.dtype, "const", const=v.value)
        else:
            device = self.placement.get(id(v), "cpu")
            view = None
            if v.op in ir.VIEW_OPS and device == "cpu":
                base = self.on(v.ins[0].rid, "cpu")
                if self.regs[base].kind != "const":
                    view = _as_view(v, self.fake[base])
            if view is not None:
                r = self.reg(v.shape, v.dtype, "view", base=base, view=(v.op, v.params))
                self.fake[r.id] = view
            else:
                ins = [self.on(x.rid, device) for x in v.ins]
                r = self.reg(v.shape, v.dtype, "buffer", device=device)
                self.emit(v.op, ins, r, v.params, v.node, note="" if v.nodes else "optimizer")
        r.nodes = list(v.nodes)
        v.rid = r.id
        return r

    def on(self, rid, device):
        """Register rid's value on `device`: itself, or a transfer (made once)."""
        r = self.regs[rid]
        if r.device == device:
            return rid
        moved = self.moved.get((rid, device))
        if moved is None:
            t = self.reg(r.shape, r.dtype, "buffer", device=device)
            self.emit("to_host" if device == "cpu" else "to_device", [rid], t, {}, note="transfer")
            moved = self.moved[(rid, device)] = t.id
        return moved

    def emit(self, op, ins, out, params, node=None, note=""):
        low = self.kernel(op, ins, out, params)
        tmps = tuple(self.reg(s, d, "buffer", scratch=True).id for s, d in low.tmps)
        self.instrs.append(Instr(low.name or op, tuple(ins), out.id, node, low.kernel, low.build, tmps,
                                 low.inplace, low.allocates, note))
        return self.instrs[-1]

    def kernel(self, op, ins, out, params):
        regs = self.regs
        low = None
        if out.device != "cpu" or op in ("to_device", "to_host"):
            return lower_cuda(op, params, out.dtype)
        if self.backend is not None:
            layouts = [self.fake.get(i, regs[i].const) for i in ins]
            low = self.backend.lower(op, [regs[i] for i in ins], layouts, out, params)
        if low is None:
            low = lower(op, [regs[i].shape for i in ins], [regs[i].dtype for i in ins],
                        out.shape, out.dtype, params)
        for pos in low.flattens:
            # NOTE: build() reshapes these operands once; a reshape that copies would
            # read a stale snapshot on every later run.
            fake = self.fake.get(ins[pos])
            if fake is not None and not _reshapes_as_view(fake):
                return generic(op, params)
        return low


def compile_graph(g, outputs=None, **options):
    """Compile graph g to a Program (see the module docstring). Allocates nothing and needs
    no GPU, device placement included (placement.py)."""
    # NOTE: compiling makes many small objects and no garbage cycles; pausing the cyclic
    # collector meanwhile saves its repeated scans (a quarter of the time on big graphs).
    paused = gc.isenabled()
    gc.disable()
    try:
        return _compile(g, outputs, **options)
    finally:
        if paused:
            gc.enable()


def _compile(g, outputs=None, *, grads=True, keep=(), backend=None, optimize_graph=True, verify=True,
             device=None, use_cuda_for=(), fuse_adds=True):
    targets, results = select(g, outputs, grads, keep)
    order = ancestors(targets)
    vals = ir.build(order, identities=optimize_graph)
    roots = [vals[n.id] for n in targets]
    live = ir.live_vals(roots)
    notes = []
    if optimize_graph:
        kernel_ops = set(backend.ops) if backend is not None else set()
        # NOTE: the fused adds have host kernels only: none when values may go to a device.
        host_ops = kernel_ops if fuse_adds and device in (None, "cpu") and not use_cuda_for else set()
        kernel_ops |= device_kernel_ops(device, use_cuda_for)
        live, notes = optimize(live, roots, {id(vals[n.id]) for n in results}, kernel_ops, host_ops)
    em = _Emitter(backend)
    em.placement = place(live, device, use_cuda_for)
    for v in live:             # live_vals keeps them in topological order
        em.val(v)

    index = {}
    for v in live:
        for n in v.nodes:
            index[n] = v.rid
    # constants folded away entirely: their values, for trace=True
    folded = [(n, v.value) for v in vals.values() if v.kind == "const"
              for n in v.nodes if not n.is_leaf and n not in index]
    out_values = [(n, em.on(index[n], "cpu")) for n in results if n in index]
    grad_regs = []
    taken = set()
    for w, gn in g.grads.items():
        if gn not in index or not any(gn is n for n in results):
            continue
        rid = em.on(index[gn], "cpu")
        r = em.regs[rid]
        if r.kind != "buffer" or r.shape != w.shape or r.dtype != w.dtype or rid in taken:
            # .grad must be a writable array of w's shape that no other .grad shares.
            cp = em.reg(w.shape, w.dtype, "buffer")
            em.emit("copy", [rid], cp, {}, gn, note="")
            rid = cp.id
        taken.add(rid)
        grad_regs.append((w, rid))
    outs = sorted({rid for _, rid in out_values} | taken)
    slots, bases, bound = plan(em.regs, em.instrs, outs)
    prog = Program(em.regs, em.instrs, slots, outs, bound, notes,
                   values=out_values, grads=grad_regs, index=index, bases=bases)
    prog.folded = folded
    if verify:
        prog.verify()
    return prog


__all__ = ["compile_graph", "select", "Lowered"]
