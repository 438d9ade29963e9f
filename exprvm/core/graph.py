"""The graph IR: plain-data nodes over numpy arrays, built through a Graph.

A Node is immutable once built except for `.value` and `.grad`, which machines
fill in. Node ids grow in creation order and inputs are always built before the
nodes that read them, so sorting a node set by id is a topological order.
"""
import math

import numpy as np

from ..errors import DTypeError, ExprError, FeedError, NoValueError, ShapeError, TraceError, UnsupportedError
from .interop import as_array
from .site import caller, format_site, user_site

LEAF_OPS = ("input", "param", "const")
UNATTACHED = 1 << 30    # the depth of a body graph that has no enclosing graph yet
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# NOTE: the classes of numpy's dtypes (np.dtype("float32") is a Float32DType): `type(d) in
# DTYPE_TYPES` asks "is d a dtype already?" in 40 ns, isinstance(d, np.dtype) in 150 (a
# check through the dtypes' metaclass), and graph building and the compiler ask per value
DTYPE_TYPES = frozenset(type(np.dtype(code)) for code in np.typecodes["All"])


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}... ({len(text)} characters)"


def _dims(name, shape):
    """A leaf's shape as a tuple of ints, or a ShapeError saying what to do instead."""
    if type(shape) is tuple:        # NOTE: the common case, checked without the passes below
        for d in shape:
            if type(d) is not int:
                break
        else:
            return shape
    dims = (shape,) if isinstance(shape, (int, np.integer)) or shape is None else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise ShapeError(f"{name}: shape {shape!r} is not an int or a sequence of ints "
                         f"(at {user_site()})") from None
    if any(d is None for d in dims):
        raise ShapeError(f"{name}: shape {shape} has a None dimension; a leaf's shape is fixed. For a "
                         "size that varies (the last, shorter batch) write the step as a function of "
                         "arrays, ev.function(fn): it is traced and compiled once per shape it is called "
                         f"with, and cached (at {user_site()})")
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise ShapeError(f"{name}: shape {shape!r} holds a dimension that is not an int (at {user_site()})")
    return tuple(int(d) for d in dims)


def norm_dtype(dtype):
    """np.dtype(dtype) if nodes may hold it: float32 or float64 for values, integers and
    bool for indices and masks. float16, complex, object, str and the rest: DTypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"not a dtype: {dtype!r}") from None
    if dt.kind == "f" and dt not in FLOAT_DTYPES:
        raise DTypeError(f"dtype {dt} is not supported; use float32 or float64")
    if dt.kind not in "fiub":
        raise DTypeError(f"dtype {dt} is not supported: nodes hold float32 or float64 values "
                         "(integers and bool for indices and masks)")
    return dt


class Shaped:
    """What has a ``shape`` tuple and a ``dtype`` (a Node, or the stand-in a shape rule
    reads for an array operand, op.Spec): numpy's ``ndim`` and ``size``, derived alike."""

    __slots__ = ()

    @property
    def ndim(self):
        """Number of axes (``len(shape)``)."""
        return len(self.shape)

    @property
    def size(self):
        """Number of elements (the product of the shape)."""
        # NOTE: math.prod, exact and a twentieth of np.prod's cost on a short tuple (shape
        # rules ask for it as nodes are built)
        return int(math.prod(self.shape))


def init_node(node, graph, op, opdef, inputs, params, shape, dtype, name, code, offset):
    """Set every slot of a new Node (shape a tuple, dtype a numpy dtype): the one list of
    them. Node(...) calls it; graph building's hot path (core/op.py build_node) calls it on
    object.__new__(Node), sparing the type call and the normalising, which cost as much."""
    node.graph = graph
    node.id = len(graph.nodes)
    node.op = op
    node.opdef = opdef
    node.inputs = inputs
    node.params = params
    node.shape = shape
    node.dtype = dtype
    node.name = name
    # NOTE: the creation site as two fields, not one (code, offset) tuple: a tuple per
    # node is one more object for the cyclic GC to scan, on the hot path. See .site.
    node._code = code        # the user's code object (None: offset is a text)
    node._offset = offset    # its bytecode offset
    node.value = None
    node.grad = None
    node.weak = False        # a Python-scalar constant that adopts its partner's dtype
    node.role = "forward"    # "grad" for nodes made by ev.grad
    node.grad_of = None      # for the node ev.grad returned: the node it is the gradient of


class Node(Shaped):
    """One value in the graph: a leaf (input, param, const) or an op applied to inputs."""

    __slots__ = ("graph", "id", "op", "opdef", "inputs", "params", "shape", "dtype",
                 "name", "_code", "_offset", "value", "grad", "weak", "role", "grad_of", "__weakref__")
    # NOTE: numpy must defer to Node's reflected operators (array * node -> Node.__rmul__).
    __array_ufunc__ = None

    def __init__(self, graph, op, opdef, inputs, params, shape, dtype, name, code, offset):
        init_node(self, graph, op, opdef, inputs, params, shape if type(shape) is tuple else tuple(shape),
                  dtype if type(dtype) in DTYPE_TYPES else np.dtype(dtype), name, code, offset)

    # -- description -------------------------------------------------------
    @property
    def site(self):
        """file:line of the user's code that built this node."""
        return format_site(self._code, self._offset)

    @property
    def is_leaf(self):
        """True for inputs, parameters and constants (nodes no op computes)."""
        return self.op in LEAF_OPS

    @property
    def label(self):
        """The node's name, or ``op#id`` for a node without one."""
        return self.name if self.name else f"{self.op}#{self.id}"

    def describe(self):
        """One line for error messages: label, shape, dtype and where it was built."""
        return f"{self.label} {self.shape} {self.dtype.name} (made at {self.site})"

    def __repr__(self):
        name = f"{self.name!r} " if self.name else ""
        return f"<Node {name}{self.op}#{self.id} {self.shape} {self.dtype.name} at {self.site}>"

    def __bool__(self):
        # NOTE: TraceError: most often an `if` inside a function being traced (ev.function)
        raise TraceError(f"the truth value of node {self.label} is unknown until it runs (a Python "
                         f"if, while, and/or or bool() on it at {user_site()}); choose values with "
                         "ev.where, run one of two branches with ev.cond, or loop with ev.while_loop "
                         "/ ev.fori_loop / ev.scan")

    def __len__(self):
        if not self.shape:
            raise UnsupportedError(f"len() of 0-d node {self.label}")
        return self.shape[0]

    def __iter__(self):
        """Iterate the first axis, as over an array: node[0], node[1], ... (new nodes). A
        0-d node is not iterable (a TypeError, as for a 0-d array)."""
        if not self.shape:
            raise UnsupportedError(f"iteration over 0-d node {self.label}")
        return (self[i] for i in range(self.shape[0]))

    # -- the value after a run, as an array's -------------------------------------------
    def _ran(self, what):
        if self.value is None:
            raise NoValueError(f"{what} of node {self.label}: it has no value yet (made at "
                               f"{self.site}); run a machine first (or use ev functions to "
                               f"build on it)")
        return np.asarray(self.value)

    def __array__(self, dtype=None, copy=None):
        # NOTE: a copy, so that writing into the result never corrupts a machine's buffer
        value = self._ran("np.asarray()")
        return np.array(value, dtype=dtype, copy=True)

    def _one(self, what):
        value = self._ran(what)
        if value.size != 1:
            raise UnsupportedError(f"{what} of node {self.label} with {value.size} elements "
                                   f"{value.shape}: only one-element nodes convert")
        return value.item()

    def item(self):
        """The value of a one-element node after a run, as a Python number."""
        return self._one("item()")

    def __float__(self):
        return float(self._one("float()"))

    def __int__(self):
        return int(self._one("int()"))

    # NOTE: == and hash stay identity-based so nodes work as dict keys (feeds); use ev.equal.
    # The arithmetic operators, indexing and the numpy-style methods (.T, .sum, ...) are
    # installed by exprvm.ops (ops/operators.py), which defines the ops they build.
    __hash__ = object.__hash__


class Graph:
    """Owns nodes; builds leaves; shares identical subexpressions (hash-consing).

    A body graph (a loop's step, a branch; see core/body.py) has a parent: an op that
    mixes its nodes with nodes of an enclosing graph captures those as inputs of the
    body (Graph.capture), and the loop node reads them from the enclosing graph.
    """

    def __init__(self, name="graph", parent=None, body=False):
        self.name = name
        self.parent = parent
        # NOTE: a body traced before it knows its enclosing graph (a loop over arrays whose
        # step reads a node) is the innermost graph of any op until it captures one.
        self.depth = (UNATTACHED if body else 0) if parent is None else parent.depth + 1
        self.captures = []       # body graphs: (node of the parent graph, leaf standing for it)
        self._captured = {}      # node of an enclosing graph -> its leaf here
        self.nodes = []
        self._cse = {}
        # The structure of the graph, one entry per node: its CSE key, or a leaf's kind,
        # shape and dtype. Graphs with equal signatures differ only in their leaves'
        # values (the LispMachine replays one program for them; see replay.py).
        self._sig = []
        self._replayable = True
        # (code, offset) every op node built now takes as its creation site, or None: probe
        # the stack. Set while ev.grad runs VJPs of exprvm's own (core/grad.py), and by
        # pin_site.
        self._site = None
        self.grads = {}          # wrt node -> gradient node, filled by ev.grad
        self.costs = {}          # wrt node -> the cost it was differentiated from

    def __repr__(self):
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes>"

    def __len__(self):
        return len(self.nodes)

    def pin_site(self):
        """Give every op node built in this graph from now on the creation site of the
        user's call that reached here, found once, until unpin_site (pass it what this
        returns). For exprvm's own code that builds many nodes and runs no user code
        meanwhile (an RNN's unroll): the site each node would have found by probing the
        stack, which costs more than the rest of building a node from deep in ev.nn. A
        site pinned already (ev.grad's) stays."""
        outer = self._site
        if outer is None:
            self._site = caller()
        return outer

    def unpin_site(self, outer):
        """End a pin_site: `outer` is what it returned."""
        self._site = outer

    # -- leaves --------------------------------------------------------------
    def tensor(self, name, shape, dtype=np.float64, init=None, value=None):
        """A leaf of any shape: an input, or a parameter when ``init`` or ``value`` is given.

        Parameters
        ----------
        name : str
            The leaf's name (shown in errors, drawings and checkpoints).
        shape : int or tuple of int
        dtype : numpy dtype, default float64
            float32, float64 or an integer type.
        init : callable, optional
            An initializer from ``ev.init`` (``init(shape, dtype) -> array``): the leaf is a
            parameter with that value.
        value : array_like, optional
            The parameter's value (its own array when the dtype and shape fit).

        Returns
        -------
        Node
            The leaf. Without ``init`` and ``value`` it is an input, fed at every run.

        Raises
        ------
        ShapeError
            For a negative dimension, or one that is not an int (a ``None`` dimension:
            a size that varies is ``ev.function``'s, which compiles one program per shape).
        DTypeError
            For a dtype exprvm does not take.

        Examples
        --------
        >>> import numpy as np, exprvm as ev
        >>> g = ev.Graph()
        >>> x = g.tensor("x", (2, 3, 4), dtype=np.float32)
        >>> x.shape, x.dtype.name, x.op
        ((2, 3, 4), 'float32', 'input')
        """
        shape = _dims(name, shape)
        if any(s < 0 for s in shape):
            raise ShapeError(f"{name}: negative dimension in shape {shape} (at {user_site()})")
        try:
            dt = norm_dtype(dtype)
        except DTypeError as e:
            raise DTypeError(f"{name}: {e} (at {user_site()})") from None
        kind = "param" if (init is not None or value is not None) else "input"
        node = self._add(Node(self, kind, None, (), {}, shape, dt, name, *caller()))
        if value is not None:
            let(node, value)
        elif init is not None:
            let(node, init(shape, dt))
        return node

    def scalar(self, name, dtype=np.float64, init=None, value=None):
        """A 0-d leaf: ``tensor(name, (), ...)``; see :meth:`tensor`.

        Examples
        --------
        >>> import exprvm as ev
        >>> g = ev.Graph()
        >>> lr = g.scalar("lr", value=0.1)
        >>> lr.shape, lr.op
        ((), 'param')
        """
        return self.tensor(name, (), dtype, init, value)

    def vector(self, name, n, dtype=np.float64, init=None, value=None):
        """A 1-d leaf of ``n`` elements: ``tensor(name, (n,), ...)``; see :meth:`tensor`.

        Examples
        --------
        >>> import exprvm as ev
        >>> g = ev.Graph()
        >>> b = g.vector("b", 3, init=ev.init.zeros())
        >>> b.shape, b.op
        ((3,), 'param')
        """
        return self.tensor(name, (int(n),), dtype, init, value)

    def matrix(self, name, shape, dtype=np.float64, init=None, value=None):
        """A 2-d leaf: ``tensor(name, shape, ...)``; see :meth:`tensor`.

        Raises
        ------
        ShapeError
            If ``shape`` is not 2-d.

        Examples
        --------
        >>> import exprvm as ev
        >>> g = ev.Graph()
        >>> W = g.matrix("W", (3, 4), init=ev.init.glorot_normal(seed=0))
        >>> W.shape, W.value.shape
        ((3, 4), (3, 4))
        """
        if len(shape) != 2:
            raise ShapeError(f"matrix {name}: shape {tuple(shape)} is not 2-d (at {user_site()})")
        return self.tensor(name, shape, dtype, init, value)

    def constant(self, value, dtype=None, name=None):
        """A constant. A bare Python number is 'weak': it takes its partner's dtype in an op."""
        weak = dtype is None and isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            arr = np.array(value, dtype=np.float64 if weak else dtype)
            norm_dtype(arr.dtype)
        except (OverflowError, DTypeError) as e:   # 10**400; complex, object or str values
            raise DTypeError(f"constant {_short(value)}: {e} (at {user_site()})") from None
        arr.setflags(write=False)
        key = None
        if arr.size <= 64:
            key = ("const", arr.dtype, arr.shape, arr.tobytes(), weak, name)
            hit = self._cse.get(key)
            if hit is not None:
                return hit
        node = self._add(Node(self, "const", None, (), {}, arr.shape, arr.dtype, name, *caller()))
        node.value = arr
        node.weak = weak
        if key is not None:
            self._cse[key] = node
        return node

    def scalar_constant(self, value, dtype):
        """A Python number as a 0-d constant of dtype (the fast path for `x * 2.0`)."""
        key = ("py", value, dtype.char)
        hit = self._cse.get(key)
        if hit is None:
            try:
                with np.errstate(over="raise"):
                    arr = np.asarray(value, dtype=dtype)
            except (OverflowError, FloatingPointError):   # 10**400, or 1e300 in float32
                raise DTypeError(f"the number {_short(value)} overflows {dtype.name}") from None
            hit = self._cse[key] = self.constant(arr, dtype=dtype)
        return hit

    # -- adding nodes ---------------------------------------------------------------
    def _add(self, node):
        """Append a leaf."""
        self.nodes.append(node)
        self._sig.append((node.op, node.shape, node.dtype))
        return node

    def append_node(self, node, key):
        """Append an op node (core.op.build_node's, or a clone's) under its CSE key:
        a node of the same op, inputs and params is shared from then on. key None: never
        shared (a random op draws its own stream), and the graph has no replayable
        signature any more."""
        self.nodes.append(node)
        self._sig.append(key)
        if key is not None:
            self._cse[key] = node
        else:
            self._replayable = False
        return node

    def clone(self, name, constants_as_inputs=False):
        """A structural copy with the same node ids, ops, params, shapes, dtypes and
        creation sites; parameters keep their values (the same arrays), inputs none.
        constants_as_inputs: constants become inputs too (a replay program's clone, so
        that one program serves graphs that differ only in their constants)."""
        twin = Graph(name)
        for n in self.nodes:
            if n.is_leaf:
                kind = "input" if (n.op == "const" and constants_as_inputs) else n.op
                c = twin._add(Node(twin, kind, None, (), {}, n.shape, n.dtype, n.label, n._code, n._offset))
                if kind in ("param", "const"):
                    c.value = n.value
                c.weak = n.weak and kind == "const"
            else:
                ins = tuple(twin.nodes[x.id] for x in n.inputs)
                twin.append_node(Node(twin, n.op, n.opdef, ins, n.params, n.shape, n.dtype, n.name,
                                      n._code, n._offset), self._sig[n.id])
        return twin

    def encloses(self, other):
        """Is this graph `other` or one of the graphs enclosing it?"""
        while other is not None:
            if other is self:
                return True
            other = other.parent
        return False

    def capture(self, node):
        """The leaf standing for `node` (a node of an enclosing graph) in this body graph,
        made once: small constants are copied in, anything else becomes an input leaf
        that the loop node reads from its own graph. A node of an enclosing graph two
        levels up is captured by the graph in between first."""
        if node.graph is self:
            return node
        leaf = self._captured.get(node)
        if leaf is not None:
            return leaf
        if self.parent is None:
            if self.depth != UNATTACHED:
                raise ExprError(f"node {node.label} (made at {node.site}) belongs to another graph")
            self.parent, self.depth = node.graph, node.graph.depth + 1
        if not node.graph.encloses(self.parent):
            raise ExprError(f"node {node.label} (made at {node.site}) belongs to a graph that does "
                            f"not enclose {self.name!r}")
        outer = self.parent.capture(node)
        if outer.op == "const" and outer.size <= 64:
            leaf = (self.constant(outer.value.item()) if outer.weak
                    else self.constant(outer.value, dtype=outer.dtype, name=outer.name))
        else:
            leaf = self._add(Node(self, "input", None, (), {}, outer.shape, outer.dtype,
                                  outer.label, outer._code, outer._offset))
            leaf.role = "capture"
            self.captures.append((outer, leaf))
        self._captured[node] = leaf
        return leaf

    def signature(self):
        """A hashable description of the graph's structure, or None for a graph with
        random ops. Two graphs with equal signatures compute the same function of their
        leaves' values (constants included)."""
        return tuple(self._sig) if self._replayable else None

    # -- queries ------------------------------------------------------------------
    def leaves(self, kind=None):
        """The graph's leaves in creation order; ``kind``: "input", "param" or "constant" for one kind."""
        return [n for n in self.nodes if n.is_leaf and (kind is None or n.op == kind)]

    def inputs(self):
        """The graph's inputs (leaves fed at run time), in creation order."""
        return self.leaves("input")

    def params(self):
        """The graph's parameters (leaves with a value of their own), in creation order."""
        return self.leaves("param")


def ancestors(targets, stop=()):
    """All nodes the targets depend on (targets included), in topological order. Nodes
    in `stop` are included but not looked through (a body's cut inputs)."""
    seen = {}
    stack = list(targets)
    cut = {id(n) for n in stop}
    while stack:
        n = stack.pop()
        if n.id in seen and seen[n.id] is n:
            continue
        seen[n.id] = n
        if id(n) not in cut:
            stack.extend(n.inputs)
    return [seen[i] for i in sorted(seen)]



def _castable(src, dst, strict):
    """May a value of dtype src be cast to a leaf of dtype dst?"""
    if src.kind == "f" and dst.kind == "f":
        return not strict  # NOTE: float32 vs float64 arrays never mix silently
    if dst.kind in "fiu":
        return src.kind in "iub"
    return src == dst


def check_value(node, value):
    """Coerce a value for a leaf, or raise FeedError naming the node. Arrays of other
    libraries (__dlpack__, __array__) are read in place when their memory is on the host."""
    try:
        arr = as_array(value)
    except FeedError as e:
        raise FeedError(f"input {node.label} (made at {node.site}): {e}") from None
    if arr.dtype != node.dtype:
        # Python numbers and lists have no dtype of their own to clash with.
        strict = hasattr(value, "dtype")
        if not _castable(arr.dtype, node.dtype, strict):
            raise FeedError(f"input {node.label}: fed dtype {arr.dtype}, expected {node.dtype.name} "
                            f"(node made at {node.site}); convert with .astype(np.{node.dtype.name})")
        arr = arr.astype(node.dtype)
    if arr.shape != node.shape:
        raise FeedError(f"input {node.label}: fed shape {arr.shape}, expected {node.shape} "
                        f"(node made at {node.site})")
    return arr


def bound_value(node):
    """A leaf's value, or FeedError naming the input that was never fed."""
    if node.value is None:
        raise FeedError(f"input {node.label} is not bound (made at {node.site}); "
                        f"feed it to run() or bind it with ev.let")
    return node.value


def let(node, value):
    """Bind a leaf's value (ev.let). The array is used as is when its dtype and shape fit
    (another library's host array too, through DLPack or __array__: no copy); a parameter
    given read-only memory (a JAX array) gets a copy, since solvers update it in place.
    An input bound so keeps its value for every later run of any machine that is not fed
    it (a run's feeds are for that run only and never change .value)."""
    if not isinstance(node, Node):
        raise ExprError(f"ev.let expects a Node, got {type(node).__name__}")
    if node.op == "const":
        raise FeedError(f"cannot bind constant {node.label} (made at {node.site})")
    if not node.is_leaf:
        raise FeedError(f"cannot bind {node.label}: it is computed by op {node.op} (made at {node.site})")
    arr = check_value(node, value)
    if node.op == "param" and not arr.flags.writeable:
        arr = arr.copy()
    node.value = arr
    return node
