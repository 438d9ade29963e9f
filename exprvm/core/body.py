"""Loop and branch bodies: a user's function traced once into a graph of its own.

ev.scan, ev.while_loop and ev.cond (ops/control.py) call the user's function once, on
placeholder leaves in a fresh body graph (a Graph with a parent). Nodes of enclosing
graphs that the function reads are captured (Graph.capture): the body gets a leaf for
each, and the loop node reads the outer node as an extra input. A Body records which
nodes stand for the loop's inputs (leaves, or op nodes cut out of the graph: the
residuals a gradient body reads) and which are its outputs.

The compiler turns a Body into a nested Program; the LispMachine walks it with
evaluate() and differentiates a walked iteration with backprop(); ev.grad builds a
body's VJP as more nodes of the same body graph (vjp_parts).
"""
import hashlib
import os

import numpy as np

from ..errors import ExprError, RunError
from .graph import Graph, Node, ancestors
from .grad import carries_gradient, depends_on, gather_result, vjp


class Body:
    """A traced function: its graph, the nodes standing for its inputs (in the loop node's
    order) and its outputs. Equal when traced alike (same structure, same constants), so
    that graphs built the same way have equal signatures (replay) and share loop nodes."""

    def __init__(self, graph, inputs, outputs, name="body", site="<unknown>", remat=False):
        self.graph = graph
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.name = name            # the user's function, for messages and drawings
        self.site = site            # where it is defined
        # remat: a loop's gradient recomputes this body's values from its inputs instead
        # of storing them per iteration (scan's checkpoint=)
        self.remat = bool(remat)
        # the outputs a user asked for; an augmented body's later ones are residuals its
        # gradient reads (set by the loop ops that add them)
        self.visible = len(self.outputs)
        self._order = self._dep = None
        self._input_ids = None
        self._vjps = {}             # VJP bodies the loop ops built, by their own keys
        sig = graph.signature()
        if sig is None:             # random ops: never equal to another body
            self._key = None
            self._hash = id(self)
        else:
            self._key = (sig, tuple(n.id for n in self.inputs), tuple(n.id for n in self.outputs),
                         _big_constants(graph), self.remat)
            self._hash = hash(self._key)

    def __eq__(self, other):
        if self is other:
            return True
        return (type(other) is Body and self._key is not None and other._hash == self._hash
                and other._key == self._key)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return (f"<Body {self.name}: {len(self.inputs)} inputs, {len(self.outputs)} outputs, "
                f"{len(self.order)} nodes>")

    @property
    def order(self):
        """The nodes computed from the inputs to the outputs, in topological order (leaves
        that are not inputs -- constants -- included, the inputs themselves not)."""
        if self._order is None:
            ins = {id(n) for n in self.inputs}
            order = [n for n in ancestors(self.outputs, stop=self.inputs) if id(n) not in ins]
            for n in order:
                if n.is_leaf and n.op != "const":
                    raise ExprError(f"{self.name}: the body reads {n.describe()}, which is not one of "
                                    "its inputs")
            self._order = order
        return self._order

    @property
    def dep(self):
        """Ids of the nodes a gradient can flow to an input through."""
        if self._dep is None:
            self._dep = depends_on(self.order, [x for x in self.inputs if carries_gradient(x)])
        return self._dep

    def varying(self, positions):
        """Ids of the nodes (inputs at `positions` included) computed from those inputs,
        through any edge: what changes from one iteration to the next."""
        var = {self.inputs[p].id for p in positions}
        for n in self.order:
            if any(x.id in var for x in n.inputs):
                var.add(n.id)
        return var

    # -- running on arrays (the LispMachine, eager calls) -----------------------------
    def evaluate(self, values, tapes=None):
        """Values of every node of the body (a dict by node id) given its inputs' values.
        With a `tapes` dict, loops inside the body record what their backprop needs there."""
        env = dict(zip(self.input_ids, values))
        for n in self.order:
            op = n.opdef
            if op is None:          # a constant
                env[n.id] = n.value
                continue
            args = [env[x.id] for x in n.inputs]
            try:
                if tapes is not None and op.record is not None:
                    v, tapes[n.id] = op.record(*args, **n.params)
                else:
                    v = (op.eager or op.impl)(*args, **n.params)
            except ExprError:
                raise
            except Exception as e:
                raise RunError(f"{type(e).__name__}: {e}\n  at {n.label} = {n.op}(...) in {self.name} "
                               f"(made at {n.site})") from e
            env[n.id] = v if type(v) is np.ndarray or op.multiple_results else np.asarray(v)
        return env

    @property
    def input_ids(self):
        if self._input_ids is None:
            self._input_ids = [n.id for n in self.inputs]
        return self._input_ids

    def outputs_of(self, env):
        return [env[n.id] for n in self.outputs]

    def backprop(self, env, tapes, seeds):
        """Run-time VJP of one evaluated iteration: the gradient flowing into each output
        (an array, or None for zero) -> the gradient of each input (an array of the input's
        shape and dtype, or None where none flows)."""
        dep = self.dep
        adj, parts = {}, {}
        for o, s in zip(self.outputs, seeds):
            if s is not None and o.id in dep:
                adj[o.id] = s if o.id not in adj else adj[o.id] + s
        for n in reversed(self.order):
            op = n.opdef
            if op is None or n.id not in dep:
                continue
            if op.multiple_results:
                got = parts.pop(n.id, None)
                if got is None:
                    continue
                gs = [got.get(k) for k in range(len(n.params["results"]))]
                gis = op.backprop(tapes[n.id], gs, env[n.id], *[env[x.id] for x in n.inputs], **n.params)
                for x, gi in zip(n.inputs, gis):
                    if gi is not None and x.id in dep and x.dtype.kind == "f":
                        adj[x.id] = gi if x.id not in adj else adj[x.id] + gi
                continue
            gn = adj.pop(n.id, None)
            if gn is None:
                continue
            if n.op == "result":
                gather_result(parts, n, gn)
                continue
            xs = [env[x.id] for x in n.inputs]
            for i, x in enumerate(n.inputs):
                if x.id not in dep or x.dtype.kind != "f" or not op.has_vjp(i):
                    continue
                gi = op.input_vjp(i, gn, env[n.id], xs, n.params)
                if gi is not None:
                    adj[x.id] = gi if x.id not in adj else adj[x.id] + gi
        out = []
        for x in self.inputs:
            gx = adj.get(x.id)
            out.append(None if gx is None else
                       np.array(np.broadcast_to(gx, x.shape), dtype=x.dtype, copy=True))
        return out

    # -- the symbolic VJP (ev.grad) ------------------------------------------------------
    def vjp_parts(self, present):
        """The body's VJP as nodes of its own graph, made once per `present` (a tuple of
        booleans: which outputs get a gradient): (seed leaves, one per present output;
        gradient nodes, one per input, None where no gradient flows)."""
        key = ("vjp", present)
        hit = self._vjps.get(key)
        if hit is None:
            seeds, ys = [], []
            for o, p in zip(self.outputs, present):
                if p:
                    seeds.append(self.graph.tensor(f"d{o.label}", o.shape, o.dtype))
                    seeds[-1].role = "seed"
                    ys.append(o)
            wrt = [x for x in self.inputs]
            grads = vjp(ys, seeds, wrt, stop=self.inputs) if ys else [None] * len(wrt)
            grads = [g if g is not None and carries_gradient(x) else None for x, g in zip(wrt, grads)]
            hit = self._vjps[key] = (seeds, grads)
        return hit

    def cache(self, key, make):
        """A derived body (a loop's gradient body...) made once per key."""
        hit = self._vjps.get(key)
        if hit is None:
            hit = self._vjps[key] = make()
        return hit


def _big_constants(graph):
    """Digests of the constants a signature describes by shape only (it holds the bytes of
    small ones): two bodies that differ only there must not be taken as equal."""
    out = []
    for n in graph.nodes:
        if n.op == "const" and n.value is not None and n.value.size > 64:
            out.append(hashlib.blake2b(np.ascontiguousarray(n.value).tobytes(), digest_size=16).digest())
    return tuple(out)


def function_site(fn):
    """file:line where a Python function is defined, or its repr."""
    fn = getattr(fn, "__wrapped__", fn)     # the user's function inside exprvm's wrapper
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def function_name(fn):
    fn = getattr(fn, "__wrapped__", fn)
    return getattr(fn, "__name__", type(fn).__name__)


def trace(fn, who, specs, call, parent=None):
    """Call `fn` once on placeholder leaves in a new body graph.

    specs: (name, shape, dtype) per placeholder; call(leaves) calls fn with them arranged
    as fn expects and returns what fn returned. Returns (graph, leaves, result). An
    ExprError raised while tracing is re-raised naming `who` and the function."""
    g = Graph(f"{function_name(fn)} ({who})", parent=parent, body=True)
    leaves = [g.tensor(name, shape, dtype) for name, shape, dtype in specs]
    try:
        result = call(leaves)
    except ExprError as e:
        raise type(e)(f"{who}: while tracing {function_name(fn)} (defined at {function_site(fn)}): "
                      f"{e}") from None
    return g, leaves, result


def as_body_node(graph, value, dtype, what):
    """A value a traced function returned, as a node of its body graph: nodes of
    enclosing graphs are captured, Python numbers and arrays become constants."""
    if isinstance(value, Node):
        if value.graph is graph:
            return value
        if value.graph.encloses(graph):
            return graph.capture(value)
        raise ExprError(f"{what}: node {value.label} (made at {value.site}) belongs to another graph")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ExprError(f"{what}: expected a node or a number, got {type(value).__name__}") from None
    if arr.dtype.kind == "O":
        raise ExprError(f"{what}: expected a node or a number, got {type(value).__name__}")
    return graph.constant(arr, dtype=arr.dtype)


def nested_graphs(g):
    """g and every body graph its loops and branches hold, at any depth (each once)."""
    out, seen, stack = [], {id(g)}, [g]
    while stack:
        graph = stack.pop()
        out.append(graph)
        for n in graph.nodes:
            for v in n.params.values():
                for item in (v if isinstance(v, tuple) else (v,)):
                    body = getattr(item, "graph", None)
                    if isinstance(body, Graph) and id(body) not in seen:
                        seen.add(id(body))
                        stack.append(body)
    return out
