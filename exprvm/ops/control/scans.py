"""ev.scan, the user's function: the loop traced into one scan node, or chunked (unroll=,
checkpoint=)."""
import functools

import numpy as np

from ...core import OPS, Node, build_node, user_site
from ...core.body import Body, function_name, function_site, trace
from ...core.tree import flatten, unflatten
from ..shape import concat, getitem, reshape, stack
from ...errors import ExprError, ShapeError
from . import scan as _scan_op  # noqa: F401  (registers the scan op)
from .common import as_value, body_nodes, check_like, float_dtype_of, graph_of, results_of, shape_dtype


def carry_nodes(fn, who, graph, carry, carry_tree, specs, site):
    """The carry a traced function returned, as body nodes: the structure, shapes and
    dtypes of init, or an ExprError naming the function."""
    leaves, tree = flatten(carry)
    if tree != carry_tree:
        raise ExprError(f"{who}: {function_name(fn)} (defined at {function_site(fn)}) returned a carry of "
                        f"structure {tree!r}, but init has structure {carry_tree!r} (called at {site})")
    nodes = body_nodes(fn, who, "carry", graph, leaves, [d for _, d in specs], site)
    check_like(fn, who, "carry", nodes, specs, site)
    return nodes


def placeholder_name(x, default):
    return x.name if isinstance(x, Node) and x.name else default


def outer_values(graph, values):
    """Loop inputs as nodes of the loop's graph (arrays and numbers become constants)."""
    return [v if isinstance(v, Node) else graph.constant(np.asarray(v), dtype=np.asarray(v).dtype)
            for v in values]


def scan(step, init, xs=None, length=None, reverse=False, unroll=1, checkpoint=None):
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
    unroll : int or bool
        Steps traced into one body (the loop then runs length / unroll iterations);
        True: every step (a Python unroll, no loop node).
    checkpoint : int, optional
        Store only every ``checkpoint``-th carry for the gradient, and recompute the
        steps between them in the backward pass (bounded memory for long sequences).

    Returns
    -------
    carry, ys
        The carry after the last step, and the ``y`` of every step stacked on a new axis 0.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> g = ev.Graph()
    >>> W = g.matrix("W", (3, 3), value=np.eye(3) * 0.5)
    >>> xs = g.matrix("xs", (5, 3), value=np.ones((5, 3)))
    >>> h, hs = ev.scan(lambda h, x: (ev.tanh(h @ W + x), h), g.constant(np.zeros(3)), xs)
    >>> h.shape, hs.shape
    ((3,), (5, 3))
    """
    site = user_site()
    if not callable(step):
        raise ExprError(f"ev.scan: step must be a function, got {type(step).__name__} (at {site})")
    xs_leaves = [as_value(x, float_dtype_of(init, xs)) for x in flatten(xs)[0]]
    rows, steps, _ = _steps(xs_leaves, length, site)
    # unroll=True: every step unrolled, a single one included (a Python loop, no loop node)
    full = isinstance(unroll, (bool, np.bool_)) and bool(unroll)
    if isinstance(unroll, (bool, np.bool_)):
        unroll = max(rows, 1) if unroll else 1
    if not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ExprError(f"ev.scan: unroll must be a positive int or a bool, got {unroll!r} (at {site})")
    if checkpoint is not None:
        if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, np.integer)) or checkpoint < 1:
            raise ExprError(f"ev.scan: checkpoint must be a positive int, got {checkpoint!r} (at {site})")
        if unroll > 1 or full:
            raise ExprError(f"ev.scan: checkpoint= and unroll= exclude each other (at {site})")
        return _chunked(step, init, xs, length, reverse, int(checkpoint), site, "checkpoint")
    if unroll > 1 or full:
        return _chunked(step, init, xs, length, reverse, int(unroll), site, "unroll")
    return _scan(step, init, xs, length, reverse, site)


def _scan(step, init, xs, length, reverse, site, remat=False):
    """scan() itself: trace step into a body, build the scan node (or evaluate on arrays)."""
    fdt = float_dtype_of(init, xs)
    init_leaves, carry_tree = flatten(init)
    init_leaves = [as_value(x, fdt) for x in init_leaves]
    xs_leaves, xs_tree = flatten(xs)
    xs_leaves = [as_value(x, fdt) for x in xs_leaves]
    rows, steps, length_node = _steps(xs_leaves, length, site)
    graph = graph_of(init_leaves, xs_leaves, length_node)

    carry_specs = [shape_dtype(x) for x in init_leaves]
    x_specs = [(shape_dtype(x)[0][1:], shape_dtype(x)[1]) for x in xs_leaves]
    names = ([placeholder_name(x, f"carry{k}") for k, x in enumerate(init_leaves)]
             + [f"{placeholder_name(x, f'xs{k}')}[t]" for k, x in enumerate(xs_leaves)])
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
    c_nodes = carry_nodes(step, "ev.scan", bg, new_carry, carry_tree, carry_specs, site)
    y_leaves, y_tree = flatten(y)
    y_nodes = body_nodes(step, "ev.scan", "y", bg, y_leaves, [fdt] * len(y_leaves), site)
    caps = list(bg.captures)
    body = Body(bg, list(leaves) + [leaf for _, leaf in caps], c_nodes + y_nodes,
                function_name(step), function_site(step), remat)
    graph = graph if graph is not None else bg.parent
    results = tuple((tuple(sh), np.dtype(d).str) for sh, d in carry_specs) + tuple(((rows,) + n.shape, n.dtype.str) for n in y_nodes)
    params = dict(body=body, n_carry=n_carry, n_x=n_x, rows=rows, steps=steps, reverse=bool(reverse),
                  summed=(False,) * len(y_nodes), results=results)
    if graph is None:               # nothing symbolic: evaluate now
        vals = OPS["scan"].impl(*init_leaves, *xs_leaves, **params)
        return unflatten(carry_tree, list(vals[:n_carry])), unflatten(y_tree, list(vals[n_carry:]))
    inputs = outer_values(graph, init_leaves) + outer_values(graph, xs_leaves) + [o for o, _ in caps]
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


def _rows(x, start, stop):
    """Rows start..stop-1 of a node or an array."""
    return getitem(x, (slice(start, stop),)) if isinstance(x, Node) else np.asarray(x)[start:stop]


def _chunked(step, init, xs, length, reverse, size, site, mode):
    """scan over chunks of `size` rows: each iteration runs `size` steps, traced in one
    body (mode "unroll") or as an inner scan whose values the gradient recomputes from the
    chunk's first carry instead of storing them (mode "checkpoint"). The rows left over
    make one more chunk; with unroll covering every step, a Python loop (no loop node)."""
    if isinstance(length, Node):
        raise ExprError(f"ev.scan: {mode}={size} needs a static length, got a length node (at {site})")
    xs_leaves, xs_tree = flatten(xs)
    rows, steps, _ = _steps([as_value(x, np.float64) for x in xs_leaves], length, site)
    if mode == "unroll" and size >= steps:
        return _python_loop(step, init, xs_leaves, xs_tree, rows, steps, reverse)
    size = min(size, max(steps, 1))
    whole = steps // size * size

    @functools.wraps(step)
    def chunk(carry, xc):
        n = size if xc is None else None
        if mode == "checkpoint":
            return _scan(step, carry, xc, n, reverse, site)
        leaves = flatten(xc)[0] if xc is not None else []
        ys = []
        for j in (range(size - 1, -1, -1) if reverse else range(size)):
            x = unflatten(xs_tree, [getitem(v, (j,)) for v in leaves]) if xc is not None else None
            carry, y = step(carry, x)
            ys.append((j, y))
        ys.sort(key=lambda p: p[0])
        return carry, _stack_trees([y for _, y in ys])

    def reshaped(start, stop):
        if xs is None:
            return None
        return unflatten(xs_tree, [reshape(_rows(v, start, stop), ((stop - start) // size, size)
                                           + tuple(np.shape(v) if not isinstance(v, Node) else v.shape)[1:])
                                   for v in xs_leaves])

    def rest(carry):
        part = None if xs is None else unflatten(xs_tree, [_rows(v, whole, steps) for v in xs_leaves])
        n = steps - whole if xs is None else None
        if mode == "checkpoint":
            return scan(step, carry, part, length=n, reverse=reverse, checkpoint=steps - whole)
        return scan(step, carry, part, length=n, reverse=reverse)

    parts = []
    carry = init
    if reverse and whole < steps:       # the last rows first
        carry, ys = rest(carry)
        parts.append((whole, ys))
    carry, ys = _scan(chunk, carry, reshaped(0, whole), None if xs is not None else whole // size,
                      reverse, site, remat=mode == "checkpoint")
    if ys is not None:
        ys = _map_tree(ys, lambda y: reshape(y, (whole,) + tuple(np.shape(y) if not isinstance(y, Node)
                                                               else y.shape)[2:]))
    parts.append((0, ys))
    if not reverse and whole < steps:
        carry, ys = rest(carry)
        parts.append((whole, ys))
    parts.sort(key=lambda p: p[0])
    return carry, _concat_rows([y for _, y in parts], rows, steps)


def _python_loop(step, init, xs_leaves, xs_tree, rows, steps, reverse):
    carry, ys = init, {}
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        x = unflatten(xs_tree, [getitem(v, (t,)) if isinstance(v, Node) else np.asarray(v)[t]
                                for v in xs_leaves]) if xs_leaves else None
        carry, ys[t] = step(carry, x)
    if not ys:
        return carry, None
    stacked = _stack_trees([ys[t] for t in range(steps)])
    return carry, _concat_rows([stacked], rows, steps)


def _map_tree(tree, fn):
    leaves, t = flatten(tree)
    return unflatten(t, [fn(v) for v in leaves])


def _stack_trees(trees):
    """A tree of stacked leaves from a list of trees of the same structure."""
    flat = [flatten(t) for t in trees]
    if flat[0][1].size == 0:
        return unflatten(flat[0][1], [])
    cols = zip(*[leaves for leaves, _ in flat])
    return unflatten(flat[0][1], [stack(list(c)) if any(isinstance(v, Node) for v in c)
                                  else np.stack([np.asarray(v) for v in c]) for c in cols])


def _concat_rows(parts, rows, steps):
    """Row blocks of ys in order, then zero rows up to `rows` (the rows past the length)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    flat = [flatten(p) for p in parts]
    tree = flat[0][1]
    out = []
    for col in zip(*[leaves for leaves, _ in flat]):
        first = col[0]
        shape = tuple(first.shape) if isinstance(first, Node) else np.shape(first)
        dtype = first.dtype
        pieces = list(col)
        if steps < rows:
            pieces.append(np.zeros((rows - steps,) + tuple(shape[1:]), dtype))
        if len(pieces) == 1:
            out.append(pieces[0])
        elif any(isinstance(v, Node) for v in pieces):
            out.append(concat(pieces, axis=0))
        else:
            out.append(np.concatenate(pieces, axis=0))
    return unflatten(tree, out)
