"""The emitter: optimized IR Vals -> registers and instructions, kernels chosen.

Each Val becomes a register: a leaf's own (input, param, const), a view of another
register where numpy would return a view (the op's record says it is a view op; the
view is made once at bind time), or a planned buffer written by one instruction whose
kernel the lowering table chooses. Values crossing between host and device get one
transfer per direction.
"""
import numpy as np

from ..core import DTYPE_TYPES, OPS, is_basic_index
from .lowering import Request, fake_array, generic, lower
from .program import Instr, Register


def _reshapes_as_view(a):
    try:
        np.reshape(a, -1, copy=False)
        return True
    except ValueError:
        return False


def as_view(op, params, base):
    """The view of array `base` that view op `op` makes, or None if numpy would copy (or
    give a scalar, as an all-integer index does)."""
    if op == "reshape":
        try:
            return np.reshape(base, params["shape"], copy=False)
        except ValueError:
            return None
    if op == "getitem" and not is_basic_index(params["index"]):
        return None
    view = OPS[op].impl(base, **params)
    return view if isinstance(view, np.ndarray) else None


class Emitter:
    def __init__(self, backend, placement):
        self.backend = backend      # "c" or "numpy": the host rows tried first
        self.placement = placement  # {id(Val): "cuda"}
        self.regs = []
        self.instrs = []
        self.fake = {}
        self.moved = {}             # (register, device) -> its copy there

    def reg(self, shape, dtype, kind, **kw):
        # NOTE: a Val's shape and dtype are a tuple and a dtype already: no conversion calls
        r = Register(len(self.regs), shape if type(shape) is tuple else tuple(shape),
                     dtype if type(dtype) in DTYPE_TYPES else np.dtype(dtype), kind, **kw)
        self.regs.append(r)
        if kind in ("buffer", "input", "param"):
            self.fake[r.id] = fake_array(r.shape, r.dtype)
        return r

    def val(self, v):
        if v.kind != "op":
            # parameters and constants the device reads live there (placement.leaves)
            leaf_device = getattr(self.placement, "leaves", {}).get(id(v), "cpu")
            if v.kind in ("input", "param"):
                r = self.reg(v.shape, v.dtype, v.kind, device=leaf_device if v.kind == "param" else "cpu")
            else:
                r = self.reg(v.shape, v.dtype, "const", const=v.value, device=leaf_device)
        else:
            device = self.placement.get(id(v), "cpu") if self.placement else "cpu"
            view = None
            if OPS[v.op].view:      # views of device registers too (DeviceArray views)
                base = v.ins[0].rid
                b = self.regs[base]
                if b.device != device:
                    base = self.on(base, device)
                    b = self.regs[base]
                if b.kind != "const" or device != "cpu":
                    view = as_view(v.op, v.params, self.fake.get(base, b.const))
            if view is not None:
                r = self.reg(v.shape, v.dtype, "view", base=base, view=(v.op, v.params), device=device)
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
        tmps = tuple(self.reg(s, d, "buffer", scratch=True, device=out.device).id for s, d in low.tmps)
        self.instrs.append(Instr(low.name or op, tuple(ins), out.id, node, low.kernel, low.build, tmps,
                                 low.inplace, low.allocates, note, low.bodies, low.meta,
                                 members=low.members))
        return self.instrs[-1]

    def kernel(self, op, ins, out, params):
        regs = self.regs
        on_device = out.device != "cpu" or op in ("to_device", "to_host")
        req = Request(op, params, [regs[i].shape for i in ins], [regs[i].dtype for i in ins],
                      out.shape, out.dtype, [self.fake.get(i, regs[i].const) for i in ins],
                      device=out.device, backend="cuda" if on_device else self.backend)
        low = lower(req)
        for pos in low.flattens:
            # NOTE: build() reshapes these operands once; a reshape that copies would
            # read a stale snapshot on every later run.
            fake = self.fake.get(ins[pos])
            if fake is not None and not _reshapes_as_view(fake):
                return generic(op, params)
        return low
