"""The user's functions: ev.scan, ev.fori_loop, ev.while_loop, ev.cond."""
import functools

import numpy as np

from ...core import OPS, Node, build_node, user_site
from ...core.body import Body, function_name, function_site, trace
from ...core.tree import flatten, unflatten
from ..shape import concat, getitem, reshape, stack
from ...errors import ExprError, ShapeError
from . import cond as _cond_op, scan as _scan_op, while_ as _while_op  # noqa: F401  (register the ops)
from .common import (as_value, body_nodes, check_like, float_dtype_of, graph_of, results_of,
                     shape_dtype, spec)


def _carry_nodes(fn, who, graph, carry, carry_tree, specs, site):
    """The carry a traced function returned, as body nodes: the structure, shapes and
    dtypes of init, or an ExprError naming the function."""
    leaves, tree = flatten(carry)
    if tree != carry_tree:
        raise ExprError(f"{who}: {function_name(fn)} (defined at {function_site(fn)}) returned a carry of "
                        f"structure {tree!r}, but init has structure {carry_tree!r} (called at {site})")
    nodes = body_nodes(fn, who, "carry", graph, leaves, [d for _, d in specs], site)
    check_like(fn, who, "carry", nodes, specs, site)
    return nodes


def _placeholder_name(x, default):
    return x.name if isinstance(x, Node) and x.name else default


def _outer(graph, values):
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
    if isinstance(unroll, (bool, np.bool_)):
        unroll = max(rows, 1) if unroll else 1
    if not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ExprError(f"ev.scan: unroll must be a positive int or a bool, got {unroll!r} (at {site})")
    if checkpoint is not None:
        if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, np.integer)) or checkpoint < 1:
            raise ExprError(f"ev.scan: checkpoint must be a positive int, got {checkpoint!r} (at {site})")
        if unroll > 1:
            raise ExprError(f"ev.scan: checkpoint= and unroll= exclude each other (at {site})")
        return _chunked(step, init, xs, length, reverse, int(checkpoint), site, "checkpoint")
    if unroll > 1:
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
    c_nodes = _carry_nodes(step, "ev.scan", bg, new_carry, carry_tree, carry_specs, site)
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


def _trace_carry_fn(fn, who, init_leaves, carry_tree, graph, site, extra_specs=()):
    """Trace fn(carry) on placeholders shaped as init: (body graph, leaves, raw result)."""
    specs = [(_placeholder_name(x, f"carry{k}"), *shape_dtype(x)) for k, x in enumerate(init_leaves)]

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
    c_nodes = _carry_nodes(body_fn, "ev.while_loop", bg, out, carry_tree, specs, site)
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
    inputs = (_outer(graph, init_leaves) + [o for o, _ in cg.captures] + [o for o, _ in bg.captures])
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
    inputs = [pred_node] + _outer(graph, op_leaves) + [o for o, _ in t_caps] + [o for o, _ in f_caps]
    try:
        node = build_node(OPS["cond"], tuple(inputs), params)
    except ShapeError as e:
        raise ShapeError(f"ev.cond: {e} (called at {site})") from None
    return unflatten(ttree, results_of(node))
