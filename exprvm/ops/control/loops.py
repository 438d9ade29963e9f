"""The user's functions ev.fori_loop, ev.while_loop and ev.cond (ev.scan: scans.py)."""
import functools

import numpy as np

from ...core import OPS, Node, build_node, user_site
from ...core.body import Body, function_name, function_site, trace
from ...core.tree import flatten, unflatten
from ...errors import ExprError, ShapeError
from . import cond as _cond_op, while_ as _while_op  # noqa: F401  (register the ops)
from .common import as_value, body_nodes, float_dtype_of, graph_of, results_of, shape_dtype, spec
from .scans import carry_nodes, outer_values, placeholder_name, scan


def _trace_carry_fn(fn, who, init_leaves, carry_tree, graph, site, extra_specs=()):
    """Trace fn(carry) on placeholders shaped as init: (body graph, leaves, raw result)."""
    specs = [(placeholder_name(x, f"carry{k}"), *shape_dtype(x)) for k, x in enumerate(init_leaves)]

    def call(leaves):
        return fn(unflatten(carry_tree, leaves))

    return trace(fn, who, specs + list(extra_specs), call, parent=graph)


def while_loop(cond_fn, body_fn, init, max_iterations=None):
    """Apply ``body_fn`` to a carry while ``cond_fn`` holds (JAX's lax.while_loop).

    Parameters
    ----------
    cond_fn : callable
        ``cond_fn(carry) -> bool scalar node``. Traced once.
    body_fn : callable
        ``body_fn(carry) -> carry``, keeping the carry's structure, shapes and dtypes.
    init : node, array, number, or a tuple/list/dict of them
    max_iterations : int, optional
        Stop after this many iterations even if ``cond_fn`` still holds. Required to
        differentiate the loop (its gradient stores every iteration's residuals); without
        it ``ev.grad`` raises GradError.

    Returns
    -------
    The carry after the last iteration (``init`` when the condition is false at once).
    """
    site = user_site()
    for f, what in ((cond_fn, "cond_fn"), (body_fn, "body_fn")):
        if not callable(f):
            raise ExprError(f"ev.while_loop: {what} must be a function, got {type(f).__name__} (at {site})")
    if max_iterations is not None and (isinstance(max_iterations, bool) or
                                       not isinstance(max_iterations, (int, np.integer)) or max_iterations < 0):
        raise ExprError(f"ev.while_loop: max_iterations must be a non-negative int or None, got "
                        f"{max_iterations!r} (at {site})")
    fdt = float_dtype_of(init)
    init_leaves, carry_tree = flatten(init)
    init_leaves = [as_value(x, fdt) for x in init_leaves]
    graph = graph_of(init_leaves)
    specs = [shape_dtype(x) for x in init_leaves]
    n_carry = len(init_leaves)

    cg, cleaves, pred = _trace_carry_fn(cond_fn, "ev.while_loop", init_leaves, carry_tree, graph, site)
    (pred,) = body_nodes(cond_fn, "ev.while_loop", "condition", cg, [pred], [np.bool_], site)
    if pred.shape != () or pred.dtype.kind not in "biu":
        raise ExprError(f"ev.while_loop: {function_name(cond_fn)} (defined at {function_site(cond_fn)}) "
                        f"must return a bool scalar, got {pred.shape} {pred.dtype.name} (called at {site})")
    bg, bleaves, out = _trace_carry_fn(body_fn, "ev.while_loop", init_leaves, carry_tree, graph, site)
    c_nodes = carry_nodes(body_fn, "ev.while_loop", bg, out, carry_tree, specs, site)
    cond_body = Body(cg, list(cleaves) + [leaf for _, leaf in cg.captures], [pred],
                     function_name(cond_fn), function_site(cond_fn))
    body = Body(bg, list(bleaves) + [leaf for _, leaf in bg.captures], c_nodes,
                function_name(body_fn), function_site(body_fn))
    results = tuple((tuple(sh), np.dtype(d).str) for sh, d in specs) + (((), np.dtype(np.int64).str),)
    params = dict(cond=cond_body, body=body, n_carry=n_carry,
                  max_iterations=None if max_iterations is None else int(max_iterations), results=results)
    graph = graph or cg.parent or bg.parent
    if graph is None:
        vals = OPS["while_loop"].impl(*init_leaves, **params)
        return unflatten(carry_tree, list(vals[:n_carry]))
    inputs = (outer_values(graph, init_leaves) + [o for o, _ in cg.captures] + [o for o, _ in bg.captures])
    node = build_node(OPS["while_loop"], tuple(inputs), params)
    return unflatten(carry_tree, results_of(node)[:n_carry])


def fori_loop(lower, upper, body, init, max_iterations=None):
    """``init`` through ``body(i, carry)`` for i = lower, ..., upper - 1 (JAX's fori_loop).

    Parameters
    ----------
    lower, upper : int or int64 scalar node
        Python ints make a scan of ``upper - lower`` steps (differentiable); a node bound
        makes a while loop, differentiable when ``max_iterations`` is given.
    body : callable
        ``body(i, carry) -> carry``; ``i`` is an int64 scalar node.
    init : node, array, number, or a tuple/list/dict of them
    max_iterations : int, optional
        With node bounds: the most iterations (see ev.while_loop).

    Returns
    -------
    The carry after the last iteration.
    """
    site = user_site()
    if not callable(body):
        raise ExprError(f"ev.fori_loop: body must be a function, got {type(body).__name__} (at {site})")
    static = all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in (lower, upper))
    if static:
        idx = np.arange(int(lower), max(int(lower), int(upper)), dtype=np.int64)

        @functools.wraps(body)
        def step(c, i):
            return body(i, c), None

        carry, _ = scan(step, init, idx)
        return carry
    for b, what in ((lower, "lower"), (upper, "upper")):
        if isinstance(b, Node) and (b.shape != () or b.dtype.kind not in "iu"):
            raise ShapeError(f"ev.fori_loop: {what} must be an integer scalar, got {b.shape} "
                             f"{b.dtype.name} (at {site})")
    start = lower if isinstance(lower, Node) else np.asarray(lower, dtype=np.int64)

    def cond_fn(state):
        return state[0] < upper

    @functools.wraps(body)
    def body_fn(state):
        i, c = state
        return (i + 1, body(i, c))

    _, carry = while_loop(cond_fn, body_fn, (start, init), max_iterations=max_iterations)
    return carry


def cond(pred, true_fn, false_fn, *operands):
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``; only the taken branch
    runs (JAX's lax.cond).

    Parameters
    ----------
    pred : bool or integer scalar node (or a Python bool)
    true_fn, false_fn : callable
        Traced once each; must return the same structure of results with the same shapes
        and dtypes.
    *operands : nodes, arrays, numbers, or tuples/lists/dicts of them

    Returns
    -------
    The taken branch's results, in the structure the branches return.
    """
    site = user_site()
    for f, what in ((true_fn, "true_fn"), (false_fn, "false_fn")):
        if not callable(f):
            raise ExprError(f"ev.cond: {what} must be a function, got {type(f).__name__} (at {site})")
    fdt = float_dtype_of(list(operands))
    op_leaves, op_tree = flatten(tuple(operands))
    op_leaves = [as_value(x, fdt) for x in op_leaves]
    pred = pred if isinstance(pred, Node) else as_value(pred, fdt)
    graph = graph_of(op_leaves, pred)
    specs = [(f"operand{k}", *shape_dtype(x)) for k, x in enumerate(op_leaves)]

    def call_with(fn):
        return lambda leaves: fn(*unflatten(op_tree, leaves))

    traced = []
    for fn in (true_fn, false_fn):
        bg, leaves, out = trace(fn, "ev.cond", specs, call_with(fn), parent=graph)
        r_leaves, r_tree = flatten(out)
        traced.append((fn, bg, leaves, r_leaves, r_tree))
    (tf, tg, tl, tr, ttree), (ff, fg, fl, fr, ftree) = traced
    if ttree != ftree:
        raise ExprError(f"ev.cond: {function_name(tf)} (defined at {function_site(tf)}) returns "
                        f"{ttree!r} but {function_name(ff)} (defined at {function_site(ff)}) returns "
                        f"{ftree!r} (called at {site})")
    t_nodes = body_nodes(tf, "ev.cond", "result", tg, tr, [fdt] * len(tr), site)
    f_nodes = body_nodes(ff, "ev.cond", "result", fg, fr, [n.dtype for n in t_nodes], site)
    for k, (a, b) in enumerate(zip(t_nodes, f_nodes)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ExprError(f"ev.cond: result {k} is {a.shape} {a.dtype.name} from {function_name(tf)} "
                            f"(defined at {function_site(tf)}) but {b.shape} {b.dtype.name} from "
                            f"{function_name(ff)} (defined at {function_site(ff)}) (called at {site})")
    t_caps, f_caps = list(tg.captures), list(fg.captures)
    # each branch reads its own captures; it takes the other's as inputs it never reads
    t_other = [tg.tensor(f"unused {leaf.label}", leaf.shape, leaf.dtype) for _, leaf in f_caps]
    f_other = [fg.tensor(f"unused {leaf.label}", leaf.shape, leaf.dtype) for _, leaf in t_caps]
    true_body = Body(tg, list(tl) + [leaf for _, leaf in t_caps] + t_other, t_nodes,
                     function_name(tf), function_site(tf))
    false_body = Body(fg, list(fl) + f_other + [leaf for _, leaf in f_caps], f_nodes,
                      function_name(ff), function_site(ff))
    results = tuple(spec(n) for n in t_nodes)
    params = dict(true=true_body, false=false_body, n_ops=len(op_leaves), results=results)
    graph = graph or tg.parent or fg.parent
    if graph is None:
        vals = OPS["cond"].impl(pred, *op_leaves, **params)
        return unflatten(ttree, list(vals))
    pred_node = pred if isinstance(pred, Node) else graph.constant(np.asarray(pred))
    inputs = [pred_node] + outer_values(graph, op_leaves) + [o for o, _ in t_caps] + [o for o, _ in f_caps]
    try:
        node = build_node(OPS["cond"], tuple(inputs), params)
    except ShapeError as e:
        raise ShapeError(f"ev.cond: {e} (called at {site})") from None
    return unflatten(ttree, results_of(node))
