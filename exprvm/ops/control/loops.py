"""The user's functions: ev.scan, ev.fori_loop, ev.while_loop, ev.cond."""
import numpy as np

from ...core import OPS, Node, build_node, user_site
from ...core.body import Body, function_name, function_site, trace
from ...core.tree import flatten, unflatten
from ...errors import ExprError, ShapeError
from . import scan as _scan_op  # noqa: F401  (registers the scan op)
from .common import (as_value, body_nodes, check_like, float_dtype_of, graph_of, results_of,
                     shape_dtype, spec)


def _placeholder_name(x, default):
    return x.name if isinstance(x, Node) and x.name else default


def _outer(graph, values):
    """Loop inputs as nodes of the loop's graph (arrays and numbers become constants)."""
    return [v if isinstance(v, Node) else graph.constant(np.asarray(v), dtype=np.asarray(v).dtype)
            for v in values]


def scan(step, init, xs=None, length=None, reverse=False, unroll=1):
    """Scan `step` along axis 0 of `xs`, threading a carry (JAX's lax.scan).

    Parameters
    ----------
    step : callable
        ``step(carry, x) -> (new_carry, y)``. Called once, on placeholder nodes, to build
        the loop's body. ``carry`` and ``y`` are a node or a tuple/list/dict of nodes
        (``y`` may be None); the carry keeps its structure, shapes and dtypes.
    init : node, array, number, or a tuple/list/dict of them
        The carry before the first step.
    xs : node, array, or a tuple/list/dict of them, optional
        Scanned along axis 0; ``step`` gets one row of each. None: ``step`` gets None and
        ``length`` is required.
    length : int or int64 scalar node, optional
        How many steps run: at most the rows of ``xs`` (``ys`` rows past it are zeros).
        A node is read at run time, so one compiled program runs any length.
    reverse : bool
        Run from the last row to the first; ``ys`` rows stay aligned with their ``xs``.
    unroll : int
        Steps traced into one body (the loop then runs length / unroll iterations).

    Returns
    -------
    carry, ys
        The carry after the last step, and the ``y`` of every step stacked on a new axis 0.

    Examples
    --------
    >>> h, hs = ev.scan(lambda h, x: (ev.tanh(h @ W + x), h), h0, xs)
    """
    site = user_site()
    if not callable(step):
        raise ExprError(f"ev.scan: step must be a function, got {type(step).__name__} (at {site})")
    fdt = float_dtype_of(init, xs)
    init_leaves, carry_tree = flatten(init)
    init_leaves = [as_value(x, fdt) for x in init_leaves]
    xs_leaves, xs_tree = flatten(xs)
    xs_leaves = [as_value(x, fdt) for x in xs_leaves]
    rows, steps, length_node = _steps(xs_leaves, length, site)
    if isinstance(unroll, (bool, np.bool_)):
        unroll = rows if unroll else 1
    if not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ExprError(f"ev.scan: unroll must be a positive int or a bool, got {unroll!r} (at {site})")
    if unroll > 1:
        return _unrolled(step, init, xs, length, reverse, int(unroll), site)
    graph = graph_of(init_leaves, xs_leaves, length_node)

    carry_specs = [shape_dtype(x) for x in init_leaves]
    x_specs = [(shape_dtype(x)[0][1:], shape_dtype(x)[1]) for x in xs_leaves]
    names = ([_placeholder_name(x, f"carry{k}") for k, x in enumerate(init_leaves)]
             + [f"{_placeholder_name(x, f'xs{k}')}[t]" for k, x in enumerate(xs_leaves)])
    specs = [(nm, s, d) for nm, (s, d) in zip(names, carry_specs + x_specs)]
    n_carry, n_x = len(init_leaves), len(xs_leaves)

    def call(leaves):
        c = unflatten(carry_tree, leaves[:n_carry])
        x = unflatten(xs_tree, leaves[n_carry:]) if xs is not None else None
        return step(c, x)

    bg, leaves, out = trace(step, "ev.scan", specs, call, parent=graph)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ExprError(f"ev.scan: {function_name(step)} (defined at {function_site(step)}) must return "
                        f"a pair (new_carry, y), got {type(out).__name__} (called at {site})")
    new_carry, y = out
    c_leaves, c_tree = flatten(new_carry)
    if c_tree != carry_tree:
        raise ExprError(f"ev.scan: {function_name(step)} (defined at {function_site(step)}) returned a "
                        f"carry of structure {c_tree!r}, but init has structure {carry_tree!r} "
                        f"(called at {site})")
    c_nodes = body_nodes(step, "ev.scan", "carry", bg, c_leaves, [d for _, d in carry_specs], site)
    check_like(step, "ev.scan", "carry", c_nodes, carry_specs, site)
    y_leaves, y_tree = flatten(y)
    y_nodes = body_nodes(step, "ev.scan", "y", bg, y_leaves, [fdt] * len(y_leaves), site)
    caps = list(bg.captures)
    body = Body(bg, list(leaves) + [leaf for _, leaf in caps], c_nodes + y_nodes,
                function_name(step), function_site(step))
    graph = graph if graph is not None else bg.parent
    results = tuple((tuple(sh), np.dtype(d).str) for sh, d in carry_specs) + tuple(((rows,) + n.shape, n.dtype.str) for n in y_nodes)
    params = dict(body=body, n_carry=n_carry, n_x=n_x, rows=rows, steps=steps, reverse=bool(reverse),
                  summed=(False,) * len(y_nodes), results=results)
    if graph is None:               # nothing symbolic: evaluate now
        vals = OPS["scan"].impl(*init_leaves, *xs_leaves, **params)
        return unflatten(carry_tree, list(vals[:n_carry])), unflatten(y_tree, list(vals[n_carry:]))
    inputs = _outer(graph, init_leaves) + _outer(graph, xs_leaves) + [o for o, _ in caps]
    if length_node is not None:
        inputs.append(length_node)
    try:
        node = build_node(OPS["scan"], tuple(inputs), params)
    except ShapeError as e:
        raise ShapeError(f"ev.scan: {e} (called at {site})") from None
    outs = results_of(node)
    return unflatten(carry_tree, outs[:n_carry]), unflatten(y_tree, outs[n_carry:])


def _steps(xs_leaves, length, site):
    """(rows, static steps or None, length node or None) of a scan."""
    rows = None
    for x in xs_leaves:
        shape = shape_dtype(x)[0]
        if not shape:
            raise ShapeError(f"ev.scan: xs must have an axis to scan, got a 0-d value (at {site})")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise ShapeError(f"ev.scan: xs differ in their number of rows: {rows} and {shape[0]} (at {site})")
    if isinstance(length, Node):
        if length.shape != () or length.dtype.kind not in "iu":
            raise ShapeError(f"ev.scan: a length node must be an integer scalar, got "
                             f"{length.shape} {length.dtype.name} (at {site})")
        if rows is None:
            raise ShapeError(f"ev.scan: a length node needs xs (their rows are the most steps it may "
                             f"give); for a loop without xs use ev.while_loop (at {site})")
        return rows, None, length
    if length is None:
        if rows is None:
            raise ShapeError(f"ev.scan: without xs, length= is required (at {site})")
        return rows, rows, None
    if isinstance(length, (bool, np.bool_)) or not isinstance(length, (int, np.integer)):
        raise ShapeError(f"ev.scan: length must be an int or an integer scalar node, got "
                         f"{type(length).__name__} (at {site})")
    length = int(length)
    if length < 0 or (rows is not None and length > rows):
        raise ShapeError(f"ev.scan: length {length} is outside [0, {rows if rows is not None else 'inf'}] "
                         f"(at {site})")
    return (rows if rows is not None else length), length, None


def _unrolled(step, init, xs, length, reverse, unroll, site):
    raise ExprError(f"ev.scan: unroll={unroll} is not supported yet (at {site})")


def fori_loop(lower, upper, body, init, max_iterations=None):
    raise NotImplementedError


def while_loop(cond_fn, body_fn, init, max_iterations=None):
    raise NotImplementedError


def cond(pred, true_fn, false_fn, *operands):
    raise NotImplementedError
