"""Replay: compiled programs for the graph structures a LispMachine meets again.

A LispMachine user builds a new graph for every batch, and most batches build the
same structure over new values. The first graphs of a structure are walked node by
node. When graphs of the same structure keep coming (equal Graph.signature(), same
cost and outputs; see WALKS_BEFORE_COMPILE), the structure is compiled once into a
TapeMachine program -- over a clone of the graph in which every constant is an input,
so that one program serves every graph of that structure -- and from then on each run
binds the new graph's leaves to the program, runs it, and copies the cost, the outputs
and the leaves' gradients back. The gradients are ev.grad's, built from the same VJP
rules the walk calls, so a replayed run and a walked run agree to rounding.

The structures and their programs live in a ReplayCache that a LispMachine is given
(`LispMachine(..., replay_cache=...)`), or in the process's default one, DEFAULT. A
cache is safe to share between threads: lookups take its lock, and a compiled
structure runs under its own lock (its program's buffers serve one run at a time).

What a replayed run does not do: give intermediate nodes values. Machines that watch
(watch=, nan_watch, inf_watch, logger) or run half a pass (fwd_only, bwd_only) always
walk, and so does LispMachine(..., replay=False).
"""
import threading
import warnings
from collections import OrderedDict

import numpy as np

from ..core import bound_value, check_value, grad
from ..errors import FeedError
from . import steady
from .tape import TapeMachine

MAX_STRUCTURES = 64     # structures remembered (being walked, or compiled)
# NOTE: a structure is walked this many times before it is compiled. Compiling costs
# about as much as 6-15 walks of the same graph (char-RNN and LSTM steps measured), so
# a structure that comes back this often has paid for its compile, and one that comes
# only a few times (a rare sequence length) is never compiled. A count, not a timer,
# so that which runs are replayed -- and their rounding -- is the same every time.
WALKS_BEFORE_COMPILE = 8


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


class ReplayCache:
    """Structures seen (key -> walks so far), compiled (key -> CompiledStructure) or that
    failed to compile (key -> False), least recently used first."""

    def __init__(self, max_structures=MAX_STRUCTURES, walks_before_compile=None):
        self.max_structures = max_structures
        self._walks = walks_before_compile   # None: the module's WALKS_BEFORE_COMPILE
        self._entries = OrderedDict()
        self._last = None       # the structure returned last, while it is the newest entry
        self._lock = threading.Lock()

    @property
    def walks_before_compile(self):
        """How many walks of a structure come before it is compiled (``WALKS_BEFORE_COMPILE`` unless the cache was given its own)."""
        return WALKS_BEFORE_COMPILE if self._walks is None else self._walks

    def clear(self):
        """Forget every structure seen and every program compiled."""
        with self._lock:
            self._entries.clear()
            self._last = None

    def stats(self):
        """What the cache holds: structures still being walked, compiled, and failed to
        compile (those are always walked). For finding out why a LispMachine loop is slow."""
        with self._lock:
            values = list(self._entries.values())
        return {"walking": sum(type(v) is int for v in values),
                "compiled": sum(type(v) is not int and v is not False for v in values),
                "failed": sum(v is False for v in values)}

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        s = self.stats()
        return (f"<ReplayCache: {s['compiled']} compiled, {s['walking']} walking, {s['failed']} failed "
                f"(of {self.max_structures}); compiles after {self.walks_before_compile} walks>")

    def compiled(self):
        """The compiled structures held, newest last."""
        with self._lock:
            return [v for v in self._entries.values() if type(v) is not int and v is not False]

    def program_for(self, key, make):
        """The compiled structure for key, or None when the caller should walk: while the
        structure has been walked fewer than walks_before_compile times, or when it could
        not be compiled. make() compiles it (outside the lock: compiling is slow)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit is self._last:
                return hit              # NOTE: the newest entry already: no reordering
            self._last = None
            if hit is None:             # never seen: walk, and remember it
                self._entries[key] = 1
                if len(self._entries) > self.max_structures:
                    self._entries.popitem(last=False)
                return None
            self._entries.move_to_end(key)
            if type(hit) is int:
                if hit < self.walks_before_compile:
                    self._entries[key] = hit + 1
                    return None
        if type(hit) is int:
            try:
                hit = make()
                steady.settle()         # a long-lived program: frozen in a steady_gc block
            except FeedError:           # the user's bad input, not the structure's fault
                raise
            except Exception as e:      # NOTE: the walk is the reference; fall back to it, loudly
                warnings.warn(f"LispMachine: cannot replay this graph ({type(e).__name__}: {e}); "
                              "it will be walked node by node", RuntimeWarning, stacklevel=4)
                hit = False
            with self._lock:
                current = self._entries.get(key)
                if current is not None and type(current) is not int and current is not False:
                    hit = current       # another thread compiled it meanwhile
                elif current is not None or len(self._entries) < self.max_structures:
                    self._entries[key] = hit
        if hit:
            with self._lock:
                if next(reversed(self._entries), None) == key:
                    self._last = hit
        return hit or None

    def forget(self, key):
        """Drop one structure (a run that failed on bad input must not mark it failed)."""
        with self._lock:
            self._entries.pop(key, None)
            self._last = None


DEFAULT = ReplayCache()


def clear():
    """Forget every structure the default cache has seen."""
    DEFAULT.clear()


def stats():
    """The default cache's stats() (see ReplayCache.stats)."""
    return DEFAULT.stats()


class CompiledStructure:
    """One compiled structure: the clone's leaves by node id, its tape, and where the
    cost, the outputs and the gradients come out."""

    def __init__(self, g, order, cost, outputs, wrt):
        # NOTE: every node is cloned, so that the clone's ids (and the labels in its
        # error messages) are the original's; only what the cost needs is compiled.
        clone = g.clone(f"{g.name} (replay)", constants_as_inputs=True)
        needed = {n.id for n in order}
        twin = clone.nodes
        self.inputs = [(n.id, twin[n.id]) for n in g.nodes
                       if n.is_leaf and n.op != "param" and n.id in needed]
        self.params = [(n.id, twin[n.id]) for n in g.nodes if n.op == "param" and n.id in needed]
        self.cost = (cost.id, twin[cost.id])
        self.outputs = [(o.id, twin[o.id]) for o in outputs]
        grads = grad(twin[cost.id], [twin[w.id] for w in wrt]) if wrt else []
        self.grads = [(w.id, gn) for w, gn in zip(wrt, grads)]
        wanted = [twin[cost.id]] + [c for _, c in self.outputs] + list(grads)
        self.tape = TapeMachine(clone, outputs=wanted, grads=False)
        self._lock = threading.Lock()

    def run(self, g):
        """Run the compiled program on graph ``g`` (of this structure): feed its leaves, copy the cost, outputs and gradients back onto ``g``'s nodes."""
        nodes = g.nodes
        with self._lock:
            feeds = {c: bound_value(nodes[i]) for i, c in self.inputs}
            for i, c in self.params:
                # NOTE: checked like a walk's parameters would be: a wrong shape is the
                # user's error (FeedError), not this structure's.
                c.value = check_value(nodes[i], bound_value(nodes[i]))
            self.tape.run(feeds)
            # NOTE: the tape's buffers are overwritten by its next run, which may be
            # another graph's: every result is copied out.
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

__all__ = ['DEFAULT', 'MAX_STRUCTURES', 'ReplayCache', 'WALKS_BEFORE_COMPILE', 'clear', 'stats']


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
