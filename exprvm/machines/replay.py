"""Replay: compiled programs for the graph structures a LispMachine meets again.

A LispMachine user builds a new graph for every batch, and most batches build the
same structure over new values. The first graphs of a structure are walked node by
node. When graphs of the same structure keep coming (equal Graph.signature(), same
cost and outputs; see WALKS_BEFORE_COMPILE), the structure is compiled once into a
TapeMachine program -- over a private clone of the graph in which every constant is
an input, so that one program serves every graph of that structure -- and from then
on each run binds the new graph's leaves to the program, runs it, and copies the
cost, the outputs and the leaves' gradients back. The gradients are ev.grad's, built
from the same VJP rules the walk calls, so a replayed run and a walked run agree to
rounding.

What a replayed run does not do: give intermediate nodes values. Machines that watch
(watch=, nan_watch, inf_watch, logger) or run half a pass (fwd_only, bwd_only) always
walk, and so does LispMachine(..., replay=False).
"""
import warnings
from collections import OrderedDict

import numpy as np

from ..core import Graph, Node, bound_value

MAX_STRUCTURES = 64     # structures remembered (being walked, or compiled)
# NOTE: a structure is walked this many times before it is compiled. Compiling costs
# about as much as 6-15 walks of the same graph (char-RNN and LSTM steps measured), so
# a structure that comes back this often has paid for its compile, and one that comes
# only a few times (a rare sequence length) is never compiled. A count, not a timer,
# so that which runs are replayed -- and their rounding -- is the same every time.
WALKS_BEFORE_COMPILE = 8

# Key -> number of walks so far (int), a Program, or False (could not be compiled)
_cache = OrderedDict()
_last = [None]          # the Program program_for returned last, while it is the newest entry


class Key:
    """A structure's cache key: (signature, cost id, output ids), hashed once. A
    signature is a long tuple of tuples, and each run looks its key up."""

    __slots__ = ("parts", "_hash")

    def __init__(self, parts):
        self.parts = parts
        self._hash = hash(parts)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return self is other or (type(other) is Key and other._hash == self._hash
                                 and other.parts == self.parts)


def clear():
    """Forget every structure seen and every program compiled."""
    _cache.clear()
    _last[0] = None


def stats():
    """What the cache holds: structures still being walked, compiled, and failed to
    compile (those are always walked). For finding out why a LispMachine loop is slow."""
    values = list(_cache.values())
    return {"walking": sum(type(v) is int for v in values),
            "compiled": sum(type(v) is not int and v is not False for v in values),
            "failed": sum(v is False for v in values)}


def program_for(key, make):
    """The program for a structure, or None when the caller should walk: while the
    structure has been walked fewer than WALKS_BEFORE_COMPILE times, or when it could
    not be compiled. make() compiles it."""
    hit = _cache.get(key)
    if hit is not None and hit is _last[0]:
        return hit                  # NOTE: the newest entry already: no move_to_end lookup
    _last[0] = None
    if hit is None:                 # never seen: walk, and remember it
        _cache[key] = 1
        if len(_cache) > MAX_STRUCTURES:
            _cache.popitem(last=False)
        return None
    _cache.move_to_end(key)
    if type(hit) is int:
        if hit < WALKS_BEFORE_COMPILE:
            _cache[key] = hit + 1
            return None
        try:
            hit = make()
        except Exception as e:      # NOTE: the walk is the reference; fall back to it, loudly
            warnings.warn(f"LispMachine: cannot replay this graph ({type(e).__name__}: {e}); "
                          "it will be walked node by node", RuntimeWarning, stacklevel=3)
            hit = False
        _cache[key] = hit
    if hit:
        _last[0] = hit
    return hit or None


class Program:
    """One compiled structure: the clone's leaves by node id, its tape, and where the
    cost, the outputs and the gradients come out."""

    def __init__(self, g, order, cost, outputs, wrt):
        from ..core import grad
        from .tape import TapeMachine

        clone = Graph(f"{g.name} (replay)")
        needed = {n.id for n in order}
        self.inputs, self.params = [], []
        # NOTE: every node is cloned, so that the clone's ids (and the labels in its
        # error messages) are the original's; only what the cost needs is compiled.
        for n in g.nodes:
            if n.is_leaf:
                # NOTE: constants become inputs, so the program does not bake in values.
                kind = "param" if n.op == "param" else "input"
                c = Node(clone, kind, None, (), {}, n.shape, n.dtype, n.label, n._code, n._offset)
                if n.id in needed:
                    (self.params if kind == "param" else self.inputs).append((n.id, c))
                if kind == "param":
                    c.value = n.value
            else:
                c = Node(clone, n.op, n.opdef, tuple(clone.nodes[x.id] for x in n.inputs), n.params,
                         n.shape, n.dtype, n.name, n._code, n._offset)
            clone.nodes.append(c)
        twin = clone.nodes
        self.cost = (cost.id, twin[cost.id])
        self.outputs = [(o.id, twin[o.id]) for o in outputs]
        grads = grad(twin[cost.id], [twin[w.id] for w in wrt]) if wrt else []
        self.grads = [(w.id, gn) for w, gn in zip(wrt, grads)]
        wanted = [twin[cost.id]] + [c for _, c in self.outputs] + list(grads)
        self.tape = TapeMachine(clone, outputs=wanted, grads=False)

    def run(self, g):
        nodes = g.nodes
        feeds = {c: bound_value(nodes[i]) for i, c in self.inputs}
        for i, c in self.params:
            c.value = bound_value(nodes[i])
        self.tape.run(feeds)
        # NOTE: the tape's buffers are overwritten by its next run, which may be another
        # graph's: every result is copied out.
        i, c = self.cost
        nodes[i].value = np.array(c.value, copy=True)
        for i, c in self.outputs:
            nodes[i].value = np.array(c.value, copy=True)
        for i, gn in self.grads:
            leaf, v = nodes[i], gn.value
            if v.shape == leaf.shape and v.dtype == leaf.dtype:
                leaf.grad = v.copy()
            else:   # a gradient built as a broadcast (a leaf the cost does not reach)
                leaf.grad = np.array(np.broadcast_to(v, leaf.shape), dtype=leaf.dtype, copy=True)
