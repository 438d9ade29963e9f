"""How a TapeMachine holds its leaves: inputs fed each run (copied into a private
buffer, or read in place when large) and parameters read in place (or copied into a
private buffer once their .value has been rebound)."""
import numpy as np

from ..core import bound_value, check_value


def _plain(arr, node):
    """May the machine read this array directly (no per-run copy)?"""
    return (type(arr) is np.ndarray and arr.dtype == node.dtype and arr.shape == node.shape
            and arr.flags.c_contiguous and arr.flags.aligned)


class FedInput:
    """An input leaf. Feeds are copied into its private buffer, except that a large input
    read by few instructions (none of them a loop) binds a fed C-contiguous array directly
    (no copy of a batch)."""

    __slots__ = ("node", "rid", "buf", "cur", "byref", "views", "steps", "dtype", "shape")
    BYREF_BYTES = 16384
    BYREF_STEPS = 8

    def __init__(self, node, rid, prog):
        r = prog.registers[rid]
        self.node, self.rid = node, rid
        self.buf = self.cur = np.empty(r.shape, r.dtype)
        self.views = [v.id for v in prog.registers if v.kind == "view" and prog.root(v.id).id == rid]
        mine = {rid, *self.views}
        self.steps = [k for k, ins in enumerate(prog.instrs) if mine.intersection(ins.ins)]
        # NOTE: never by reference into a loop: rebinding its body costs more than a copy
        self.byref = (r.nbytes >= self.BYREF_BYTES and len(self.steps) <= self.BYREF_STEPS
                      and not any(prog.instrs[k].bodies for k in self.steps))
        self.dtype, self.shape = self.buf.dtype, r.shape

    def feed(self, value, m):
        """Take this run's value (the node's .value is never written: a feed is for one run,
        ev.let binds a value to persist)."""
        node = self.node
        if type(value) is not np.ndarray:
            value = check_value(node, value)    # another library's host array: a view, no copy
        if value.dtype == node.dtype and value.shape == node.shape:
            if value is self.cur:
                return
            if self.byref and value.flags.c_contiguous and value.flags.aligned and m._private(value):
                m._rebind_input(self, value)
                return
        else:
            value = check_value(node, value)
        if self.cur is not self.buf:
            m._rebind_input(self, self.buf)
        np.copyto(self.buf, value)


class BoundParam:
    """A parameter leaf: its own array is read directly (buf None), or copied into buf each run."""

    __slots__ = ("node", "rid", "seen", "buf")

    def __init__(self, node, rid):
        self.node, self.rid, self.seen, self.buf = node, rid, None, None

    def bind(self):
        node = self.node
        value = bound_value(node)
        checked = check_value(node, value)
        self.seen = value
        if self.buf is None and checked is value and _plain(value, node):
            return value
        if self.buf is None:
            self.buf = np.empty(node.shape, node.dtype)
        np.copyto(self.buf, checked)
        return self.buf

    def refresh(self):
        value = self.node.value
        if value is not self.seen:
            value = check_value(self.node, bound_value(self.node))
            self.seen = self.node.value
        np.copyto(self.buf, value, casting="unsafe")
