"""Parameters that outlive graphs, and Module, the base class of the nn blocks.

A block owns its parameter ARRAYS (plain numpy, drawn once with an ev.init
initializer). Applying the block in a graph creates, once per graph, a leaf
node bound to the very same array, so:

- a LispMachine user may build a fresh graph per batch: every graph reads the
  current weights, and a solver's in-place update is seen by all of them;
- a TapeMachine user builds one graph once and the compiled program keeps
  reading the arrays the solver updates.

After a run the gradients live on that graph's leaf nodes (``node.grad``).
``model.nodes(g)`` lists those nodes; ``model.collect_grads(g)`` copies their
gradients onto the model's own Param objects and returns them, which is what
``opt.step`` should take when graphs come and go (see the NOTE on Module).

A Module is also a read-only mapping ``dotted name -> array`` of all its
parameters, so ``ev.save(path, model, ...)`` and ``ev.load(path, model)`` work
on it directly; the names ("lstm.0.W_x") are stable checkpoint keys.
"""
import copy
import weakref
from collections.abc import Mapping

import numpy as np

from ..errors import DTypeError, ExprError, ShapeError
from ..core import FLOAT_DTYPES, Graph, Node


class Param:
    """One named parameter array, bound to a leaf node in every graph it is used in."""

    __slots__ = ("name", "_value", "grad", "_nodes")

    def __init__(self, name, value):
        value = np.ascontiguousarray(value)
        if value.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"parameter {name!r}: dtype {value.dtype} is not float32 or float64")
        self.name = name
        self._value = value
        self.grad = None
        # NOTE: graph -> weakref(node). A strong value would keep its graph (the key)
        # alive through node.graph, and dead graphs would never leave the cache.
        self._nodes = weakref.WeakKeyDictionary()

    @property
    def value(self):
        """The parameter's array. Assigning copies into it in place (graphs and compiled programs hold this very array); a new shape is a ShapeError."""
        return self._value

    @value.setter
    def value(self, new):
        # Copy in place: graphs and compiled programs hold this very array.
        arr = np.asarray(new)
        if arr.shape != self._value.shape:
            raise ShapeError(f"parameter {self.name!r}: cannot assign shape {arr.shape} "
                             f"to a parameter of shape {self._value.shape}")
        np.copyto(self._value, arr, casting="same_kind")

    @property
    def shape(self):
        """The parameter's shape."""
        return self._value.shape

    @property
    def dtype(self):
        """The parameter's dtype."""
        return self._value.dtype

    def node(self, g):
        """This parameter's leaf node in graph g, created on first use. In a loop's body
        (ev.scan's step) it is the outermost graph's node, which the body captures: the
        parameter stays one leaf that solvers and gradients see."""
        if g.parent is not None:
            return g.capture(self.node(_outermost(g)))
        n = self.node_in(g)
        if n is None:
            n = g.tensor(self.name, self.shape, self.dtype, value=self._value)
            self._nodes[g] = weakref.ref(n)
        return n

    def node_in(self, g):
        """The node already standing for this parameter in g, or None."""
        ref = self._nodes.get(g)
        return None if ref is None else ref()

    def bind(self, g, node):
        """Use `node` (a float node of g with this shape and dtype) for this parameter in g."""
        if not isinstance(node, Node) or node.graph is not g:
            raise ExprError(f"parameter {self.name!r}: can only bind a node of graph {g!r}")
        if node.shape != self.shape or node.dtype != self.dtype:
            raise ShapeError(f"parameter {self.name!r} is {self.shape} {self.dtype}; cannot bind "
                             f"{node.describe()}")
        self._nodes[g] = weakref.ref(node)

    def __repr__(self):
        return f"<Param {self.name!r} {self.shape} {self.dtype.name}>"


def sub_seed(seed, k):
    """A reproducible, distinct seed for the k-th draw of a block seeded with `seed`."""
    if seed is None:
        return None
    return (tuple(seed) if isinstance(seed, tuple) else (int(seed),)) + (int(k),)


def draw(init, shape, dtype, seed):
    """init(shape, dtype), with init's seed replaced by `seed` when the block has one."""
    if seed is not None and getattr(init, "seed", "absent") is None:
        init = copy.copy(init)
        init.seed = seed
    return np.asarray(init(shape, dtype), dtype=dtype)


def draw_weight(init, fan_in, fan_out, dtype, seed, blocks=1):
    """A (fan_in, blocks * fan_out) weight for `x @ W`, each block drawn on its own.

    NOTE: ev.init computes fans for the ``W @ x`` layout (fan_out, fan_in), so each
    block is drawn in that shape and transposed; a fused gate matrix gets the
    scale of one gate, not of the 4x wider matrix.
    """
    parts = [draw(init, (fan_out, fan_in), dtype, sub_seed(seed, j)).T for j in range(blocks)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _outermost(g):
    while g.parent is not None:
        g = g.parent
    return g


def graph_of(x, who):
    if not isinstance(x, Node):
        raise ExprError(f"{who}: expected a graph node as input, got {type(x).__name__}; "
                        f"build inputs with g.tensor / g.matrix")
    return x.graph


class Module(Mapping):
    """A tree of blocks owning named parameters.

    Names are explicit: a block's ``name`` is the prefix of its parameters'
    names ("lstm.0" owns "lstm.0.W_x"); containers name their children from
    their own name. Collecting parameters checks that names are unique.

    NOTE: solvers key their state (Adam's moments) by the identity of the
    objects passed to ``step``. Graph nodes die with their graph, so a loop that
    builds a fresh graph per batch must pass ``model.collect_grads(g)`` (the
    model's stable Param objects), not ``model.nodes(g)``. With one graph built
    once, either works.
    """

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise ExprError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name
        self._entries = []          # Params and child Modules, in creation order

    # -- building ----------------------------------------------------------------
    def add_param(self, local, value):
        """Create a parameter named ``<module name>.<local>`` owning ``value`` and register it.

        Parameters
        ----------
        local : str
            The name within this module.
        value : numpy.ndarray
            The initial value (the parameter keeps this array).

        Returns
        -------
        Param
        """
        p = Param(f"{self.name}.{local}", value)
        self._entries.append(p)
        return p

    def add(self, child):
        """Register a child block (its parameters become this module's too) and return it."""
        if not isinstance(child, Module):
            raise ExprError(f"{self.name}.add: expected a Module, got {type(child).__name__}")
        self._entries.append(child)
        return child

    # -- parameters --------------------------------------------------------------
    def params(self):
        """All Param objects of this module and its children, in creation order."""
        out, seen = [], {}
        self._collect(out)
        for p in out:
            if p.name in seen and seen[p.name] is not p:
                raise ExprError(f"{self.name}: two parameters are named {p.name!r}; "
                                f"give the blocks distinct name= prefixes")
            seen[p.name] = p
        # A block added twice (weight tying) contributes its parameters once.
        return list(seen.values())

    def _collect(self, out):
        for e in self._entries:
            if isinstance(e, Param):
                out.append(e)
            else:
                e._collect(out)

    def parameters(self):
        """dict dotted name -> parameter array (the live arrays, not copies)."""
        return {p.name: p.value for p in self.params()}

    def nodes(self, g):
        """The leaf nodes standing for this model's parameters in graph g (those it uses)."""
        if not isinstance(g, Graph):
            raise ExprError(f"{self.name}.nodes: expected a Graph, got {type(g).__name__}")
        return [n for n in (p.node_in(g) for p in self.params()) if n is not None]

    def collect_grads(self, g):
        """Set each Param's .grad from its node in g (None if g lacks it) and return the Params."""
        ps = self.params()
        for p in ps:
            n = p.node_in(g)
            p.grad = None if n is None else n.grad
        return ps

    def bind(self, g, nodes):
        """Use the given nodes of g as parameters there: {dotted name: node}.

        For weight tying across blocks, or to hand parameters to ev.check_grad.
        """
        by_name = {p.name: p for p in self.params()}
        for name, node in nodes.items():
            if name not in by_name:
                raise ExprError(f"{self.name}.bind: no parameter named {name!r} "
                                f"(have {sorted(by_name)})")
            by_name[name].bind(g, node)

    def num_parameters(self):
        """The number of scalars in all the module's parameters (state included)."""
        return int(sum(p.value.size for p in self.params()))

    # -- read-only mapping name -> array (ev.save / ev.load take it as is) ------------
    def __getitem__(self, name):
        for p in self.params():
            if p.name == name:
                return p.value
        raise KeyError(name)

    def __iter__(self):
        return iter([p.name for p in self.params()])

    def __len__(self):
        return len(self.params())

    # NOTE: Mapping would compare modules by content and make them unhashable.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}: {len(self)} parameters, {self.num_parameters()} values>"


class Sequential(Module):
    """Apply blocks (or plain functions of one node, such as ev.tanh) one after another."""

    def __init__(self, *layers, name="seq"):
        super().__init__(name)
        for f in layers:
            if isinstance(f, Module):
                self.add(f)
            elif not callable(f):
                raise ExprError(f"Sequential {name!r}: {f!r} is neither a Module nor callable")
        self.layers = list(layers)

    def __call__(self, x):
        for f in self.layers:
            x = f(x)
        return x
