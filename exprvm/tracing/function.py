"""ev.function: a Python function of arrays, traced into a graph once per signature,
compiled on a TapeMachine, and cached.

    @ev.function
    def step(x, y):
        loss = ev.nn.mean_cross_entropy(model(x), y)
        ev.grad(loss, model)           # model's Params get .grad after every call
        return loss

    loss = step(x_batch, y_batch)      # traced and compiled on the first call
    loss = step(x_last, y_last)        # a new shape: traced and compiled once more
    step.trace_count, step.programs    # what happened
    print(step.program_for(x_batch, y_batch))

A call's signature is its arguments' tree (tuples, lists, dicts) with every array's
shape and dtype and every other value itself: arrays (and numpy scalars) become the
traced graph's inputs, fed on every call; Python numbers, strings, None and other
hashable values are static -- baked into the graph, and a new value traces anew (pass
a 0-d array for a number that changes every call); an ev.nn model passed as an
argument is static by identity and by its blocks' training mode (``model.train()`` and
``model.eval()`` run programs traced apart), and its parameters, like those of any
model the function uses, are read in place (a solver's update is seen by the next
call). Arrays the function closes over are constants of the trace. The state updates
of the blocks the function builds (batch norm's running statistics, in training mode)
are written back after every call, as a machine given ``updates=`` does.

The result is the function's result with every node replaced by its value (an array
the caller owns). Programs are kept per signature in a least-recently-used cache of
max_programs entries.

Inside the function, nodes have no values: Python's `if`, `while` and `for` cannot
branch on them (ev.TraceError); build the branch into the graph instead (ev.where,
ev.cond, ev.while_loop, ev.scan).

Threads may share a Function: the cache takes a lock, a signature is traced once, and
the calls running one program take turns on its machine (each gets its own results).
"""
import functools
import inspect
import threading
from collections import OrderedDict

from ..core import Graph, Node, grad as grad_nodes, updates_of
from ..errors import GradError, UsageError
from ..machines import TapeMachine
from . import trees

MAX_PROGRAMS = 32


class Traced:
    """One signature's trace: its graph, the machine running it, its inputs in order, and
    the shape of the result."""

    __slots__ = ("graph", "machine", "inputs", "result", "modules", "signature")

    def call(self, arrays):
        values = self.machine.run(dict(zip(self.inputs, arrays)))
        return trees.rebuild_result(self.result, values)[0]


class Function:
    """A traced function (see the module docstring). Options: max_programs (the cache's
    size), and any TapeMachine option (backend=, threads=, nan_watch=, ...)."""

    def __init__(self, fn, *, max_programs=MAX_PROGRAMS, wrt=None, **machine_options):
        # wrt: (argnums, one argnum given, return the value too) for value_and_grad and grad
        if not callable(fn):
            raise UsageError(f"ev.function takes a function, got {type(fn).__name__}")
        if "updates" in machine_options:
            raise UsageError("ev.function: updates= is not an option of a traced function; the state "
                             "updates of the blocks it builds (batch norm in training mode) are its own")
        if int(max_programs) < 1:
            raise UsageError(f"ev.function: max_programs must be >= 1, got {max_programs}")
        self.fn = fn
        self.max_programs = int(max_programs)
        self.options = machine_options
        self.trace_count = 0
        self._wrt = wrt                 # value_and_grad: (argnums, single) to differentiate
        self._cache = OrderedDict()     # signature -> Traced, least recently used first
        self._lock = threading.Lock()   # the cache's; each machine has its own for its runs
        try:
            self._names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):     # builtins without a signature
            self._names = []
        functools.update_wrapper(self, fn, updated=())

    # -- calling ---------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        arrays = []
        key = self._key(args, kwargs, arrays)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            hit = self._traced(key, args, kwargs)
        return hit.call(arrays)

    def _key(self, args, kwargs, arrays):
        shape = tuple(trees.flatten_args(a, arrays, self._arg_name(i)) for i, a in enumerate(args))
        if not kwargs:
            return shape
        return shape, tuple((k, trees.flatten_args(v, arrays, k)) for k, v in sorted(kwargs.items()))

    def _arg_name(self, i):
        return f"argument {self._names[i]!r}" if i < len(self._names) else f"argument {i}"

    def program_for(self, *args, **kwargs):
        """The Program these arguments run (traced and compiled now if it is not cached)."""
        key = self._key(args, kwargs, [])
        with self._lock:
            hit = self._cache.get(key)
        return (hit or self._traced(key, args, kwargs)).machine.program

    @property
    def programs(self):
        """{signature, as text: Program} of the programs cached, least recently used first."""
        with self._lock:
            return {t.signature: t.machine.program for t in self._cache.values()}

    def clear(self):
        """Forget every program traced."""
        with self._lock:
            self._cache.clear()

    def __repr__(self):
        return (f"<ev.function {getattr(self.fn, '__qualname__', self.fn)}: {len(self._cache)} programs cached "
                f"(of {self.max_programs}), traced {self.trace_count} times>")

    def __get__(self, obj, objtype=None):
        # NOTE: a decorated method: bind the instance as a static argument (by identity
        # for a model, by value otherwise).
        return self if obj is None else functools.partial(self, obj)

    # -- tracing ---------------------------------------------------------------------
    def _traced(self, key, args, kwargs):
        t = self._trace(key, args, kwargs)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:         # another thread traced it meanwhile: use theirs
                return hit
            self.trace_count += 1
            self._cache[key] = t
            while len(self._cache) > self.max_programs:
                self._cache.popitem(last=False)
        return t

    def _trace(self, key, args, kwargs):
        name = getattr(self.fn, "__name__", "function")
        g = Graph(f"{name} (traced)")
        arg_shapes, kw_shapes = (key, ()) if not kwargs else key
        leaves = []
        for i, s in enumerate(arg_shapes):
            _leaves(g, s, self._names[i] if i < len(self._names) else f"arg{i}", leaves)
        for k, s in kw_shapes:
            _leaves(g, s, k, leaves)
        modules = trees.modules_in(list(args) + list(kwargs.values()), {})
        todo = list(leaves)
        traced_args = [trees.rebuild_args(s, todo, modules) for s in arg_shapes]
        traced_kwargs = {k: trees.rebuild_args(s, todo, modules) for k, s in kw_shapes}
        out = self.fn(*traced_args, **traced_kwargs)
        if self._wrt is not None:
            argnums, single, with_value = self._wrt
            out = _value_and_grad(out, traced_args, argnums, single)
            if not with_value:
                out = out[1]
        nodes = []
        result = trees.flatten_result(out, nodes)
        for n in nodes:
            if n.graph is not g:
                raise UsageError(f"ev.function: {name} returned {n.describe()}, a node of another graph "
                                 "than its arguments'")
        t = Traced()
        t.graph, t.inputs, t.result, t.modules = g, leaves, result, modules
        # NOTE: the state updates its blocks registered (batch norm's running statistics)
        t.machine = TapeMachine(g, outputs=nodes, updates=updates_of(g), **self.options)
        t.signature = _signature(arg_shapes, kw_shapes)
        return t


def _leaves(g, shape, name, out):
    """Input leaves of graph g for the arrays of an argument tree, named after the argument."""
    kind = shape[0]
    if kind == trees.ARRAY:
        out.append(g.tensor(name, shape[1], shape[2]))
    elif kind is tuple or kind is list:
        for i, s in enumerate(shape[1]):
            _leaves(g, s, f"{name}[{i}]", out)
    elif kind is dict:
        for k, s in zip(shape[1], shape[2]):
            _leaves(g, s, f"{name}[{k!r}]", out)


def _signature(arg_shapes, kw_shapes):
    parts = [trees.describe(s) for s in arg_shapes] + [f"{k}={trees.describe(s)}" for k, s in kw_shapes]
    return f"({', '.join(parts)})"


def _value_and_grad(value, args, argnums, single):
    """(value, gradients of value with respect to the arguments at argnums), each gradient
    in its argument's tree (an ev.nn model's: {parameter name: gradient})."""
    if not isinstance(value, Node):
        raise GradError(f"ev.value_and_grad: the function must return a scalar node, got "
                        f"{type(value).__name__}")
    grads = []
    for k in argnums:
        if not -len(args) <= k < len(args):
            raise UsageError(f"ev.value_and_grad: argnums {k} is out of range for {len(args)} arguments")
        grads.append(_grads_of(value, args[k]))
    return value, (grads[0] if single else tuple(grads))


def _grads_of(cost, arg):
    """The gradient of cost for an argument tree: nodes in its shape."""
    if isinstance(arg, Node):
        return grad_nodes(cost, arg)
    if type(arg) in (tuple, list):
        return type(arg)(_grads_of(cost, v) for v in arg)
    if type(arg) is dict:
        return {k: _grads_of(cost, v) for k, v in arg.items()}
    if trees.is_module(arg):
        nodes = {p.name: p.node_in(cost.graph) for p in arg.params() if getattr(p, "trainable", True)}
        nodes = {k: n for k, n in nodes.items() if n is not None}
        return dict(zip(nodes, grad_nodes(cost, list(nodes.values())))) if nodes else {}
    raise GradError(f"ev.value_and_grad: cannot differentiate with respect to a static argument "
                    f"({arg!r:.40}); pass it as an array")
