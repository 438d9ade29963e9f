"""What a TapeMachine run hands out, and the guarantee that it stays put.

After a run, the value of every result (an output, a gradient) lands on its node
(`.value`), on the parameter it is the gradient of (`.grad`) and on that parameter's
owner (an ev.nn Param). Those arrays are the machine's own result buffers -- no copy on
the steady path -- yet they stay put: before a run writes a result buffer, it checks
whether anyone besides the machine and those attributes still holds it (a history list,
a local variable, a view of it, a feed), and if so the register gets a new buffer and
the held array is left to its holders. A training loop that reads `W.grad` once per
step pays nothing; `hist.append(W.grad)` gets a new array every run.

NOTE: "holds" is CPython's reference count of the array, measured at the end of each
run after the hand-out (the machine's own references: its register table, the prebound
instructions, the read-only view `borrow=True` returns) and compared at the start of the
next. A result buffer owns its memory, so every view a user takes of it counts as a
reference to it (numpy points a view's base at the array owning the memory).
"""
import sys

import numpy as np

from ..core import owner_of


class Result:
    """One result register: its own array, who it is handed to, and what reads it."""

    __slots__ = ("rid", "arr", "ro", "base", "value_of", "grad_of", "owners", "views", "steps")

    def __init__(self, rid, arr, views, steps):
        self.rid = rid
        self.views = views          # view registers rooted at it, in order
        self.steps = steps          # instructions reading or writing it (or its views)
        self.value_of = []          # nodes whose .value it is
        self.grad_of = []           # wrt nodes whose .grad it is
        self.owners = []            # owners of those wrt nodes (ev.nn Params)
        self.set_array(arr)

    def set_array(self, arr):
        self.arr = arr
        self.ro = arr.view()        # what borrow=True returns: the buffer, read-only
        self.ro.flags.writeable = False
        self.base = None            # references the machine holds itself: unknown until handed out


def _others(res):
    """References to res.arr beyond the attributes it was handed to.
    NOTE: check() and hand_out() compare two of these counts, so both take them through
    this one function: any temporary reference is then counted alike on both sides."""
    arr = res.arr
    n = sys.getrefcount(arr)
    for node in res.value_of:
        n -= node.value is arr
    for node in res.grad_of:
        n -= node.grad is arr
    for o in res.owners:
        n -= o.grad is arr
    return n


def held(results):
    """The results someone besides the machine and those attributes still holds."""
    return [res for res in results if res.base is not None and _others(res) > res.base]


def hand_out(results):
    """Put each result's array on the nodes and owners it goes to; a new array's own
    references are counted once, at its first hand-out (no one else can hold it yet: the
    run's check left held arrays to their holders)."""
    for res in results:
        arr = res.arr
        for node in res.value_of:
            node.value = arr
        for node in res.grad_of:
            node.grad = arr
        for o in res.owners:
            o.take_grad(arr)
        del arr
        if res.base is None:
            # NOTE: the machine's own references do not change from run to run: rebinding
            # an input rebuilds instructions over the same arrays (one reference out, one in)
            res.base = _others(res)


def plan_results(prog):
    """{register id: (value nodes, wrt nodes)} of the results a Result can serve (CPU
    buffers: exclusive, written by every run), and the rest as (node, rid, "value" or
    "grad") pairs handed out otherwise. A leaf's own value is never replaced."""
    mine, other = {}, []
    for attr, pairs in (("value", prog.values), ("grad", prog.grads)):
        for node, rid in pairs:
            if attr == "value" and node.is_leaf:
                continue
            r = prog.registers[rid]
            if r.kind == "buffer" and r.device == "cpu":
                mine.setdefault(rid, ([], []))[attr == "grad"].append(node)
            else:
                other.append((node, rid, attr))
    return mine, other


def make_results(prog, arrays, mine):
    """A Result for each register of plan_results, over the arrays bound to them."""
    views = {rid: [] for rid in mine}
    for v in prog.registers:
        if v.kind == "view":
            root = prog.root(v.id).id
            if root in views:
                views[root].append(v.id)
    out = []
    for rid, (value_of, grad_of) in mine.items():
        touched = {rid, *views[rid]}
        steps = [k for k, ins in enumerate(prog.instrs)
                 if touched.intersection(ins.writes()) or touched.intersection(ins.ins) or touched.intersection(ins.tmps)]
        res = Result(rid, arrays[rid], views[rid], steps)
        res.value_of = value_of
        res.grad_of = grad_of
        res.owners = [o for o in (owner_of(w) for w in grad_of) if o is not None]
        out.append(res)
    return out


def hand_out_other(other, arrays):
    """Results a Result cannot serve: views and CPU values get a fresh copy each run, device
    arrays (gradients that stay on the GPU for the device solvers) are handed as they are."""
    for node, rid, attr in other:
        a = arrays[rid]
        if isinstance(a, np.ndarray):
            a = np.array(a, copy=True)
        if attr == "value":
            node.value = a
        else:
            node.grad = a
            o = owner_of(node)
            if o is not None:
                o.take_grad(a)


def returned(a, borrow):
    """An output as run() returns it: a copy the caller owns, or with borrow the buffer
    itself, read-only (a device array: copied to the host either way)."""
    if type(a) is not np.ndarray:
        return a.numpy() if hasattr(a, "numpy") else np.array(a, copy=True)
    if not borrow:
        return a.copy()
    v = a.view()
    v.flags.writeable = False
    return v
