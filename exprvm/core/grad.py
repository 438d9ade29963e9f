"""Symbolic differentiation: ev.grad adds gradient nodes to the graph.

Each op's VJP is called with nodes, so the result is ordinary graph nodes that
any machine can run, render, or differentiate again.
"""
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


def grad(cost, wrt):
    """Gradient nodes of scalar `cost` with respect to a node or a list of nodes."""
    single = isinstance(wrt, Node)
    wrt = [wrt] if single else list(wrt)
    check_cost(cost, "grad")
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
    adj = {cost.id: g.constant(1.0, dtype=cost.dtype)}
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
