"""The op record: one Op per primitive, the table OPS of them, and build_node(), the one
way a node of an op is made.

apply() and every op function build a graph node when any argument is a Node and otherwise evaluates
the numpy reference eagerly. VJP rules are written with exprvm's own functions,
so the same rule yields gradient *nodes* under ev.grad and gradient *arrays*
inside the LispMachine.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import DTypeError, ExprError, ShapeError
from .graph import DTYPE_TYPES, FLOAT_DTYPES, Node, Shaped, init_node
from .rules import batch_elementwise, node_in
from .site import caller, in_package, user_site

OPS = {}
# NOTE: module-level names for build_node.s hot path (a class attribute costs a type lookup)
_new = object.__new__
_DTYPE = np.dtype


@dataclass(frozen=True)
class Row:
    """One row of the op test table: how to make sample inputs for the op.

    args: one spec per input: ("f", shape, low, high) float, ("i", shape, high) int
    in [0, high), ("b", shape) bool. params: keyword params. ref: an independent
    naive numpy formula to check impl against (optional). grad: run finite differences.
    random: the op draws from params["rng"]; tests check its distribution, not its values.
    """
    args: tuple
    params: dict = field(default_factory=dict)
    ref: Optional[Callable] = None
    grad: bool = True
    random: bool = False


@dataclass(frozen=True, eq=False)
class Op:
    name: str
    impl: Callable                      # numpy reference: impl(*arrays, **params) -> ndarray
    rule: Callable                      # rule(*nodes, **params) -> (shape, dtype)
    vjp: Optional[tuple] = None         # per input: fn(g, ans, *inputs, **params) or None
    row: Optional[Row] = None
    ufunc: Optional[np.ufunc] = None    # impl is this ufunc: callable with out=
    int_args: tuple = ()                # positions whose Python values are integer data
    elementwise: bool = False           # output may reuse a same-shaped input's buffer
    variadic: bool = False              # any number of inputs; vjp[0](i, g, ans, *xs) for input i
    doc: str = ""
    eager: Optional[Callable] = None    # how arrays are evaluated (a kernel for big ones);
                                        # None: impl. Tests hold impl to the row's ref.
    # What the compiler may know of the op (read by compiler/, defined with the op):
    view: bool = False                  # numpy returns a view of input 0 (free on the tape)
    identity: Optional[Callable] = None  # identity(ins, shape, dtype, params) -> the position
                                        # of an operand equal to the result, or None (x * 1)
    batch: Optional[Callable] = None    # batch(in_shapes, shape, params) -> per input "b"
                                        # (stacked along axis 0) or "s" (shared), or None:
                                        # k copies over rows can run as one op over stacked rows
    # Ops with several results (loops, branches; ops/control.py). The node's value is a
    # tuple; each result is read through a projection node (op "result", params index).
    multiple_results: bool = False
    vjp_all: Optional[Callable] = None  # vjp_all(gs, ans, *inputs, **params) -> per input a
                                        # gradient node or None; gs per result (None: zero)
    record: Optional[Callable] = None   # record(*arrays, **params) -> (value, tape): a run
                                        # that keeps what backprop needs (run-time autodiff)
    backprop: Optional[Callable] = None  # backprop(tape, gs, ans, *arrays, **params) ->
                                        # per input a gradient array or None
    # Set by defop: every VJP is exprvm's own code, so the nodes it builds under ev.grad
    # take the site of the user's ev.grad call (core/grad.py pins it, sparing the probe)
    package_vjp: bool = False

    @property
    def differentiable(self):
        """True when the op has a VJP for at least one of its inputs."""
        if self.vjp_all is not None:
            return True
        return self.vjp is not None and any(v is not None for v in self.vjp)

    def input_vjp(self, i, g, ans, inputs, params):
        """Gradient wrt input i, or None if that input is not differentiable (a rule may
        return None too: unary_grad's for an operand its op's formula does not read)."""
        if self.vjp is None:
            return None
        if self.variadic:
            return self.vjp[0](i, g, ans, *inputs, **params)
        fn = self.vjp[i] if i < len(self.vjp) else None
        return None if fn is None else fn(g, ans, *inputs, **params)

    def has_vjp(self, i):
        """True when the op has a VJP for input ``i`` (gradients flow into it)."""
        if self.vjp_all is not None:
            return True
        if self.vjp is None:
            return False
        return self.variadic or (i < len(self.vjp) and self.vjp[i] is not None)


def defop(name, impl, rule, vjp=None, row=None, **kw):
    """Register a primitive. Returns a function that builds nodes / evaluates eagerly.

    This is also the documented way for users to add custom ops: give a numpy
    impl, a shape/dtype rule and one VJP per input written with ev functions.
    """
    if name in OPS:
        raise ExprError(f"op {name!r} is already registered")
    if vjp is not None and not isinstance(vjp, tuple):
        vjp = (vjp,)
    if kw.get("elementwise") and not kw.get("variadic") and "batch" not in kw:
        kw["batch"] = batch_elementwise
    kw["package_vjp"] = vjp is not None and all(in_package(f) for f in vjp if f is not None)
    OPS[name] = Op(name, impl, rule, vjp, row, **kw)

    op = OPS[name]

    def build(*args, **params):
        return build_node(op, args, params)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = kw.get("doc") or f"exprvm op {name}"
    return build


# -- apply ---------------------------------------------------------------------

# NOTE: param values that are their own key part (hashable, and equal only to values that
# build the same node); anything else goes through _freeze.
_ATOMS = frozenset((int, float, str, bool, type(None)))


def _param_key(params):
    """The params of an op as a hashable CSE key part: (name, value, name, value, ...).
    NOTE: tuples of ints and slices (every getitem's index, its gradient's shape) are
    turned into key parts directly: hash() raising on the slices, and the general
    _freeze, cost more than the rest of building the node. One flat tuple, not a tuple
    of pairs: each tuple a node keeps is one more object for the collector to scan."""
    out = []
    for k, v in params.items():
        t = type(v)
        if t is tuple:
            v = _index_key(v)
            if v is None:
                return _general_key(params)
        elif t not in _ATOMS:
            return _general_key(params)
        out.append(k)
        out.append(v)
    return tuple(out)


def _index_key(index):
    """An index of ints, slices, None and Ellipsis as a hashable key part, or None for
    anything else: the index itself when it holds no slice, else a tuple with each slice
    as (start, stop, step) (no element of such an index is a tuple, so the key reads back
    one way only). NOTE: one pass that builds the key as it checks: slices are the common
    case (every gate's columns, every step's rows)."""
    out = []
    sliced = False
    for i in index:
        t = type(i)
        if t is slice:
            out.append((i.start, i.stop, i.step))
            sliced = True
        elif t is int or i is None or i is Ellipsis:
            out.append(i)
        else:
            return None
    return tuple(out) if sliced else index


def _general_key(params):
    pk = tuple(params.items())
    try:
        hash(pk)
    except TypeError:  # slices, arrays, lists: normalise them
        return _freeze(params)
    return pk


def _freeze(v):
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, slice):
        return ("slice", v.start, v.stop, v.step)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, np.dtype):
        return v.str
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    try:
        hash(v)
    except TypeError:
        return _Same(v)
    return v


class _Same:
    """Key part for an unhashable param: equal only to a key part for the same object. It
    holds the object, so that no other object can take its id while a key refers to it."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return type(other) is _Same and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


def _ref_dtype(args):
    """The dtype Python scalars adopt: that of the first strongly typed float node."""
    a = args[0]
    if type(a) is Node and not a.weak and a.dtype.kind == "f":
        return a.dtype
    for a in args:
        if isinstance(a, Node) and not a.weak and a.dtype.kind == "f":
            return a.dtype
    for a in args:
        if isinstance(a, Node) and a.dtype.kind == "f":
            return a.dtype
    for a in args:      # integer nodes only: Python ints join them (a loop's counter: i + 1)
        if isinstance(a, Node) and a.dtype.kind in "iu" and not a.weak:
            return a.dtype
    return np.dtype(np.float64)


def _as_node(a, graph, ref, integer):
    if isinstance(a, Node):
        if a.graph is not graph:
            if graph.depth <= a.graph.depth:
                raise ExprError(f"node {a.label} (made at {a.site}) belongs to another graph")
            a = graph.capture(a)     # a loop body reading a node of an enclosing graph
        if a.weak and a.dtype != ref and not integer:
            return graph.constant(a.value.astype(ref), dtype=ref)
        return a
    if isinstance(a, (list, tuple)) and node_in(a) is not None:
        return stacked(a, graph, ref)
    if integer or isinstance(a, (bool, np.bool_)):
        return graph.constant(np.asarray(a))
    if isinstance(a, (int, float)):
        if ref.kind != "f" and not isinstance(a, int):
            ref = np.dtype(np.float64)      # a float with integer nodes: mixing, named by the rule
        return graph.scalar_constant(a, ref)
    return graph.constant(np.asarray(a))


def _innermost(args, graph):
    """The most deeply nested graph among the Node arguments: a node built from a loop
    body's nodes and its enclosing graph's belongs to the body (which captures the rest)."""
    for a in args:
        if type(a) is Node and a.graph.depth > graph.depth:
            graph = a.graph
    return graph


def stacked(seq, graph, ref=None):
    """A list or tuple holding nodes (and numbers, arrays, nested lists), read as numpy
    reads a list: its items stacked along a new first axis, one stack node per level.
    Every op's positional operands pass through here (build_node), so ev.std([x, x + 2])
    is ev.std(ev.stack([x, x + 2])). Python numbers take the nodes' dtype."""
    if ref is None:
        ref = _ref_dtype([a for a in _flat(seq) if isinstance(a, Node)] or [0.0])
    items = [stacked(a, graph, ref) if isinstance(a, (list, tuple)) else _as_node(a, graph, ref, False)
             for a in seq]
    if not items:
        raise ShapeError(f"an empty list cannot be stacked\n  built at {user_site()}")
    return build_node(OPS["stack"], tuple(items), {"axis": 0})


def lift(a):
    """a, or its stack when a is a list or tuple holding nodes (see stacked): for
    functions that read their operand before any op is built."""
    if isinstance(a, (list, tuple)):
        found = node_in(a)
        if found is not None:
            return stacked(a, _innermost(list(_flat(a)), found.graph))
    return a


def _flat(seq):
    for a in seq:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        else:
            yield a


class Spec(Shaped):
    """What a shape rule reads of an array operand on the eager path: shape and dtype."""
    __slots__ = ("shape", "dtype", "weak")

    def __init__(self, shape, dtype, weak=False):
        self.shape, self.dtype, self.weak = shape, dtype, weak

    def describe(self):
        return f"array {self.shape} {self.dtype.name}"


def _spec(a, ref, integer):
    if type(a) is np.ndarray or isinstance(a, np.generic):
        return Spec(a.shape, a.dtype)
    if not integer and isinstance(a, (int, float)) and not isinstance(a, bool):
        return Spec((), ref, True)      # a Python number takes its partner's dtype
    arr = np.asarray(a)
    return Spec(arr.shape, arr.dtype)


# NOTE: the operand signatures (op, shapes, dtypes, params) that passed their rule
# eagerly: a LispMachine's backward walk calls the same VJP ops on the same shapes every
# run, and a dict lookup costs a fraction of a rule. Bounded: cleared when full.
_PASSED = {}
_PASSED_MAX = 4096
_ndarray = np.ndarray


def eager(op, args, params):
    """Evaluate op on arrays (no node among args), after its shape rule: arrays that do
    not fit give the op's typed error, as built nodes do, never numpy's own."""
    key = None
    for a in args:
        if type(a) is not _ndarray:
            break
    else:
        key = (op, *[(a.shape, a.dtype) for a in args], *params.items())
        try:
            if key in _PASSED:
                return (op.eager or op.impl)(*args, **params)
        except TypeError:       # an unhashable param (a list, a slice): no shortcut
            key = None
    _check_eager(op, args, params)
    if key is not None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.clear()
        _PASSED[key] = True
    return (op.eager or op.impl)(*args, **params)


def _check_eager(op, args, params):
    ref = _DTYPE(np.float64)
    for a in args:
        dt = getattr(a, "dtype", None)
        if dt is not None and dt.kind == "f":
            ref = dt
            break
    int_args = op.int_args
    try:
        specs = [_spec(a, ref, i in int_args) for i, a in enumerate(args)]
        op.rule(*specs, **params)
    except (ShapeError, DTypeError) as e:
        raise type(e)(f"{op.name}: {e}\n  operands: {operands(specs)}\n  called at {user_site()}") from None


def operands(nodes):
    return "; ".join(f"{'abcdefgh'[i] if i < 8 else i} = {n.describe()}" for i, n in enumerate(nodes))


def apply(name, *args, **params):
    """Build a node of the registered op ``name`` over ``args``, or evaluate it eagerly
    when no argument is a node (``ev.apply("tanh", x)`` is ``ev.tanh(x)``).

    Parameters
    ----------
    name : str
        A key of ``ev.OPS``.
    *args : Node or array_like
        The operands; Python numbers and arrays become constants.
    **params
        The op's keyword parameters.

    Returns
    -------
    Node or numpy.ndarray
    """
    return build_node(OPS[name], args, params)


def _unheld(op, e):
    """The DTypeError for an operand of op that no node can hold (e: the constant's)."""
    return DTypeError(f"{op.name}: {e}\n  built at {user_site()}")


def build_node(op, args, params):
    """Build a node of op over args (converting Python values to constants), or evaluate
    eagerly when no argument is a Node. The hot path of graph building: a new node costs
    one CSE lookup, one shape rule and a stack probe for its creation site (none while
    ev.grad has pinned the site, Graph._site). The key (None for a random op, which is
    never shared) goes to the graph's CSE table and signature."""
    graph = None
    for a in args:
        if type(a) is Node:
            graph = a.graph
            break
    if graph is None:
        for a in args:
            if type(a) is list or type(a) is tuple:
                found = node_in(a)
                if found is not None:
                    graph = _innermost(list(_flat(a)), found.graph)
                    break
        else:
            return eager(op, args, params)

    inputs = args
    for a in args:
        if type(a) is not Node or a.weak or a.graph is not graph:
            t = type(a)
            if (t is float or t is int) and len(args) == 2 and not op.int_args:
                # NOTE: a Python number beside a float node (x * 2.0, 1 - z): the general
                # conversion below, with its passes over the operands, made short
                first = a is args[0]
                other = args[1] if first else args[0]
                if type(other) is Node and not other.weak and other.dtype in FLOAT_DTYPES:
                    try:
                        c = graph.scalar_constant(a, other.dtype)
                    except DTypeError as e:     # 10 ** 400: no float holds it
                        raise _unheld(op, e) from None
                    inputs = (c, other) if first else (other, c)
                    break
            graph = _innermost(args, graph)
            ref = _ref_dtype(args)
            int_args = op.int_args
            try:
                inputs = tuple(a if type(a) is Node and not a.weak and a.graph is graph
                               else _as_node(a, graph, ref, i in int_args) for i, a in enumerate(args))
            except DTypeError as e:     # a Python value no node can hold
                raise _unheld(op, e) from None
            break
    name = op.name
    if name in REWRITES:
        better = REWRITES[name](*inputs, **params)
        if better is not None:
            return better
    if params and "rng" in params:
        key = None  # a random op is never shared: each call draws its own stream
    else:
        pk = _param_key(params) if params else ()     # the params as a hashable key part
        if len(inputs) == 2:
            key = (name, inputs[0].id, inputs[1].id, pk)
        elif len(inputs) == 1:
            key = (name, inputs[0].id, pk)
        else:
            key = (name, *[i.id for i in inputs], pk)
        hit = graph._cse.get(key)
        if hit is not None:  # NOTE: the same inputs and params passed the rule before
            return hit
    try:
        shape, dtype = op.rule(*inputs, **params) if params else op.rule(*inputs)
    except (ShapeError, DTypeError) as e:
        raise type(e)(f"{name}: {e}\n  operands: {operands(inputs)}\n  built at {user_site()}") from None
    if type(shape) is not tuple or type(dtype) not in DTYPE_TYPES:  # a custom op's rule may
        shape, dtype = tuple(shape), np.dtype(dtype)                # give a list, a type
    site = graph._site
    if site is None:
        # NOTE: the user's frame is two or more above this one: build_node is reached
        # through a wrapper (build, apply, an op's own function or a Node operator).
        code, offset = caller(2)
    else:
        code, offset = site
    node = _new(Node)
    init_node(node, graph, name, op, inputs, params, shape, dtype, None, code, offset)
    return graph.append_node(node, key)


REWRITES = {}  # op name -> fn(*inputs, **params) returning a better node or None; see rewrites.py
