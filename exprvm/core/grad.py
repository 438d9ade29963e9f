"""Symbolic differentiation: ev.grad adds gradient nodes to the graph.

Each op's VJP is called with nodes, so the result is ordinary graph nodes that
any machine can run, render, or differentiate again.
"""
import numpy as np

from ..errors import GradError
from .graph import FLOAT_DTYPES, Node, ancestors
from .op import apply
from .site import caller


def check_cost(cost, who):
    if not isinstance(cost, Node):
        raise GradError(f"{who}: cost must be a Node, got {type(cost).__name__}")
    if cost.shape != ():
        raise GradError(f"{who}: cost {cost.label} must be a scalar, got shape {cost.shape} "
                        f"(made at {cost.site}); reduce it with ev.sum or ev.mean")
    if cost.dtype.kind != "f":
        raise GradError(f"{who}: cost {cost.label} must be float, got {cost.dtype.name} (made at {cost.site})")


def carries_gradient(x):
    """Can a gradient flow through node x: a float value, or a loop's tuple of results?"""
    return x.dtype.kind == "f" or (x.opdef is not None and x.opdef.multiple_results)


def depends_on(order, sources):
    """Ids of nodes in `order` reachable from `sources` through differentiable edges."""
    dep = {s.id for s in sources}
    for n in order:
        if n.id in dep or n.is_leaf:
            continue
        opdef = n.opdef
        for i, x in enumerate(n.inputs):
            if x.id in dep and (x.dtype in FLOAT_DTYPES or carries_gradient(x)) and opdef.has_vjp(i):
                dep.add(n.id)
                break
    return dep


def gather_result(parts, n, gn):
    """Keep gradient gn of projection n (op "result") for its multi-result node's VJP, which
    runs once for all of the node's results (summing what two readers of one result give)."""
    got = parts.setdefault(n.inputs[0].id, {})
    k = n.params["index"]
    got[k] = gn if k not in got else got[k] + gn


def backward(order, adj, dep):
    """Reverse-mode sweep over `order` (topological) from the adjoints in `adj` (node id ->
    gradient node), adding gradient nodes to the graph; fills adj in place.

    A multi-result node (a loop) gets its results' gradients from its projections (op
    "result") and runs its VJP once for all of them (Op.vjp_all); a result with no
    gradient flowing in gets None, which the rule reads as zeros.

    The nodes a VJP of exprvm's own builds take the site of the user's call that reached
    this sweep, found once here and pinned on the graph (Graph._site) instead of probed
    per node; a user's VJP (a custom op's, Op.package_vjp false) is probed as ever, so
    its nodes point at its own lines.
    """
    if not order:
        return adj
    graph = order[0].graph
    site = caller()
    outer = graph._site
    try:
        _sweep(order, adj, dep, graph, site)
    finally:
        graph._site = outer
    return adj


def _sweep(order, adj, dep, graph, site):
    parts = {}          # multi-result node id -> {result index: gradient}
    for n in reversed(order):
        if n.is_leaf or n.id not in dep:
            continue
        opdef = n.opdef
        if opdef.multiple_results:
            got = parts.pop(n.id, None)
            if got is None:
                continue
            graph._site = None      # NOTE: a loop's VJP traces bodies: probed as ever
            gs = [got.get(k) for k in range(len(n.params["results"]))]
            gis = opdef.vjp_all(gs, n, *n.inputs, **n.params)
            for x, gi in zip(n.inputs, gis):
                if gi is not None and x.id in dep and x.dtype.kind == "f":
                    adj[x.id] = gi if x.id not in adj else adj[x.id] + gi
            continue
        gn = adj.get(n.id)
        if gn is None:
            continue
        if n.op == "result":        # one result of a loop: gathered for the loop's VJP
            gather_result(parts, n, gn)
            continue
        graph._site = site if opdef.package_vjp else None
        inputs = n.inputs
        for i, x in enumerate(inputs):
            if x.id not in dep or x.dtype not in FLOAT_DTYPES:
                continue
            # None: the op has no VJP for input i, or its rule finds, for these params,
            # that it reads no input i
            gi = opdef.input_vjp(i, gn, n, inputs, n.params)
            if gi is None:
                continue
            adj[x.id] = gi if x.id not in adj else adj[x.id] + gi


def vjp(ys, seeds, wrt, stop=()):
    """Gradient nodes of sum_k <ys[k], seeds[k]> with respect to each node of `wrt` (None
    where that sum does not depend on it). ys, seeds and wrt are nodes of one graph;
    nodes in `stop` are not looked through (a loop body's cut inputs). Unlike grad, this
    records nothing on the graph (no .grads, no roles): loops build their bodies' VJPs
    with it."""
    order = ancestors(ys, stop=stop)
    dep = depends_on(order, wrt)
    adj = {}
    for y, s in zip(ys, seeds):
        if y.id in dep:
            adj[y.id] = s if y.id not in adj else adj[y.id] + s
    # NOTE: a stop node is an input here even when an op computes it: its gradient is a
    # result, never passed on to what computes it (those are inputs of their own).
    cut = {id(n) for n in stop}
    backward([n for n in order if id(n) not in cut], adj, dep)
    return [adj.get(w.id) for w in wrt]


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
    backward(order, adj, dep)

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
