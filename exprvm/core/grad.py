"""Symbolic differentiation: ev.grad adds gradient nodes to the graph.

Each op's VJP is called with nodes, so the result is ordinary graph nodes that
any machine can run, render, or differentiate again.
"""
import numpy as np

from ..errors import GradError
from .graph import Node, ancestors
from .op import apply


def check_cost(cost, who):
    if not isinstance(cost, Node):
        raise GradError(f"{who}: cost must be a Node, got {type(cost).__name__}")
    if cost.shape != ():
        raise GradError(f"{who}: cost {cost.label} must be a scalar, got shape {cost.shape} "
                        f"(made at {cost.site}); reduce it with ev.sum or ev.mean")
    if cost.dtype.kind != "f":
        raise GradError(f"{who}: cost {cost.label} must be float, got {cost.dtype.name} (made at {cost.site})")


def depends_on(order, sources):
    """Ids of nodes in `order` reachable from `sources` through differentiable edges."""
    dep = {s.id for s in sources}
    for n in order:
        if n.id in dep or n.is_leaf:
            continue
        for i, x in enumerate(n.inputs):
            if x.id in dep and x.dtype.kind == "f" and n.opdef.has_vjp(i):
                dep.add(n.id)
                break
    return dep


def check_seed(y, seed, who):
    """GradError unless seed (a node of y's graph, or an array; Python numbers take y's
    dtype) fits as the gradient flowing into y: y's shape and dtype."""
    if not isinstance(y, Node):
        raise GradError(f"{who}: y must be a Node, got {type(y).__name__}")
    if y.dtype.kind != "f":
        raise GradError(f"{who}: {y.label} must be float to be differentiated, got {y.dtype.name} "
                        f"(made at {y.site})")
    if isinstance(seed, Node):
        if seed.graph is not y.graph:
            raise GradError(f"{who}: seed {seed.describe()} belongs to another graph than {y.label}")
        got_shape, got_dtype = seed.shape, seed.dtype
    else:
        arr = np.asarray(seed)
        got_shape, got_dtype = arr.shape, arr.dtype
        if not isinstance(seed, (np.ndarray, np.generic)) and arr.dtype.kind in "iuf":
            got_dtype = y.dtype     # Python numbers and lists take y's dtype
    if got_shape != y.shape:
        raise GradError(f"{who}: seed of shape {got_shape} for {y.label} of shape {y.shape} (made at "
                        f"{y.site}); the seed is the gradient flowing into y and has y's shape")
    if got_dtype != y.dtype:
        raise GradError(f"{who}: seed of dtype {got_dtype} for {y.label} of dtype {y.dtype.name} "
                        f"(made at {y.site}); convert it with .astype(np.{y.dtype.name})")


def seed_node(y, seed, who):
    """The seed as a node of y's graph (an array becomes a constant), checked by check_seed."""
    check_seed(y, seed, who)
    return seed if isinstance(seed, Node) else y.graph.constant(np.asarray(seed, y.dtype), dtype=y.dtype)


def grad(cost, wrt, seed=None):
    """Gradient nodes of scalar `cost` with respect to a node or a list of nodes.

    With seed= the cost may have any shape: seed is the gradient flowing into it (a
    node, or an array of its shape and dtype), and the result is the vector-Jacobian
    product sum(seed * d cost / d wrt) (PyTorch's backward(gradient), Gorgonia's
    Backpropagate with output gradients). A node seed may be an input, fed at run time.
    """
    single = isinstance(wrt, Node)
    wrt = [wrt] if single else list(wrt)
    if seed is None:
        check_cost(cost, "grad")
    elif not isinstance(cost, Node):
        raise GradError(f"grad: y must be a Node, got {type(cost).__name__}")
    g = cost.graph
    order = ancestors([cost])
    present = {n.id for n in order}
    for w in wrt:
        if not isinstance(w, Node) or w.graph is not g:
            raise GradError(f"grad: {w!r} is not a node of the cost's graph")
        if w.id not in present:
            raise GradError(f"grad: cost {cost.label} (made at {cost.site}) does not depend on "
                            f"{w.describe()}")
        if w.dtype.kind != "f":
            raise GradError(f"grad: cannot differentiate with respect to {w.describe()}: not float")

    dep = depends_on(order, wrt)
    start = len(g.nodes)
    adj = {cost.id: g.constant(1.0, dtype=cost.dtype) if seed is None else seed_node(cost, seed, "grad")}
    for n in reversed(order):
        gn = adj.get(n.id)
        if gn is None or n.is_leaf or n.id not in dep:
            continue
        for i, x in enumerate(n.inputs):
            if x.id not in dep or x.dtype.kind != "f" or not n.opdef.has_vjp(i):
                continue
            gi = n.opdef.input_vjp(i, gn, n, n.inputs, n.params)
            if gi is None:      # a rule may find, for these params, that it reads no input i
                continue
            adj[x.id] = gi if x.id not in adj else adj[x.id] + gi

    out = []
    for w in wrt:
        # A cost that reaches w only through non-differentiable ops has zero gradient.
        r = adj.get(w.id)
        if r is None:
            r = apply("broadcast_to", g.constant(0.0, dtype=w.dtype), shape=w.shape)
        out.append(r)
    for n in g.nodes[start:]:
        n.role = "grad"
    for w, r in zip(wrt, out):
        r.grad_of = w
        g.grads[w] = r
        g.costs[w] = cost
    return out[0] if single else out
