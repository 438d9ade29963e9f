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

Names. A block given ``name=`` keeps it. A block built without one has its class's
default ("linear") until a container adopts it: ``Sequential`` names its children by
position ("0", "2": ``0.W``, ``2.b``, as PyTorch does), a block assigned to an attribute
of another (``self.fc = ev.nn.Linear(...)``) takes the attribute's name, and ``add``
names it by its position among the children. A container's own name prefixes its
children's ("enc.0.W"), and an unnamed Sequential has none.

Gradients. Every graph node standing for a Param is owned by it (core/owners.py): a run
of either machine hands the node's new gradient to the Param too, so ``p.grad`` is the
latest run's and ``opt.step()`` (a solver given the model once) needs no collect_grads.
With ``p.accumulate`` (``Solver(..., accumulate=True)`` sets it) gradients add up over
runs until ``opt.zero_grad()``.
"""
import copy
import weakref
from collections.abc import Mapping

import numpy as np

from ..errors import CheckpointError, DTypeError, ExprError, ShapeError, UsageError
from ..core import FLOAT_DTYPES, Graph, Node, set_array_owner, set_owner


class Param:
    """One named parameter array, bound to a leaf node in every graph it is used in."""

    __slots__ = ("name", "_value", "grad", "accumulate", "_summed", "_nodes", "__weakref__")

    def __init__(self, name, value):
        value = np.ascontiguousarray(value)
        if value.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"parameter {name!r}: dtype {value.dtype} is not float32 or float64")
        self.name = name
        self._value = value
        self.grad = None
        self.accumulate = False     # add each run's gradient to .grad (until zero_grad)
        self._summed = False        # .grad is this Param's own sum (not a machine's array)
        # NOTE: graph -> weakref(node). A strong value would keep its graph (the key)
        # alive through node.graph, and dead graphs would never leave the cache.
        self._nodes = weakref.WeakKeyDictionary()
        set_array_owner(value, self)    # model.parameters()' arrays lead a solver back here

    def take_grad(self, grad):
        """A run's gradient for this parameter (called by the machines): it becomes .grad,
        or with accumulate is added to it."""
        if not self.accumulate or self.grad is None:
            self.grad, self._summed = grad, False
            if self.accumulate:     # the first of a sum: an array of our own to add into
                self.grad, self._summed = np.array(grad, dtype=self.dtype, copy=True), True
        elif self._summed:
            self.grad += grad
        else:
            self.grad, self._summed = self.grad + grad, True

    def zero_grad(self):
        """Forget the gradient (and an accumulated sum)."""
        self.grad, self._summed = None, False

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
            set_owner(n, self)
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
        set_owner(node, self)

    def __repr__(self):
        grad = "no grad" if self.grad is None else "grad summed" if self._summed else "grad"
        return f"Param({self.name!r}, {self.shape}, {self.dtype.name}, {grad})"


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

    training = True             # train() / eval() set it on every block

    def __init__(self, name=None, default=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ExprError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self._entries = []          # Params and child Modules, in creation order
        self._auto = name is None   # no name given: a container adopting it names it
        self._namer = None          # the container that named it
        self.name = name if name is not None else (default or "")

    # -- building ----------------------------------------------------------------
    def _prefix(self):
        return f"{self.name}." if self.name else ""

    def add_param(self, local, value):
        """Create a parameter named ``<module name>.<local>`` (``<local>`` for a module without a name) owning ``value`` and register it.

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
        p = Param(f"{self._prefix()}{local}", value)
        self._entries.append(p)
        return p

    def add(self, child, local=None):
        """Register a child block (its parameters become this module's too) and return it.
        A child built without a name is named `local` (default: its position among the
        children) under this module's name."""
        if not isinstance(child, Module):
            raise UsageError(f"{self.name or type(self).__name__}.add: expected a Module, got "
                             f"{type(child).__name__}; plain functions go in a Sequential")
        if local is None:
            local = str(sum(isinstance(e, Module) for e in self._entries))
        if not any(e is child for e in self._entries):
            self._entries.append(child)
        if child._auto:
            child._auto, child._namer = False, self
            child._rename(f"{self._prefix()}{local}")
        return child

    def __setattr__(self, attr, value):
        # NOTE: as in PyTorch, a block assigned to an attribute is a child: its parameters
        # are the module's, and an unnamed one takes the attribute's name.
        if isinstance(value, Module) and not attr.startswith("_") and "_entries" in self.__dict__:
            self.add(value, attr)
        object.__setattr__(self, attr, value)

    def _rename(self, new):
        """Rename this block, its parameters and the children named from it."""
        old = self.name
        object.__setattr__(self, "name", new)
        for e in self._entries:
            derived = bool(old) and e.name.startswith(f"{old}.")
            if not (derived or not old):
                continue
            renamed = f"{new}{e.name[len(old):]}" if old else f"{new}.{e.name}"
            if isinstance(e, Param):
                e.name = renamed
            elif e._namer is self or derived:
                e._rename(renamed)

    def modules(self):
        """This block and every block under it, depth first, each once."""
        seen, out, stack = set(), [], [self]
        while stack:
            m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            out.append(m)
            stack.extend(reversed([e for e in m._entries if isinstance(e, Module)]))
        return out

    def train(self, mode=True):
        """Training mode (or evaluation mode, mode=False) for every block, for the graphs
        built from now on (batch norm's statistics, dropout); returns the module."""
        for block in self.modules():
            object.__setattr__(block, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode for every block (train(False)); returns the module."""
        return self.train(False)

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

    def state_dict(self):
        """{dotted name: a copy of its array} of every parameter (running statistics too)."""
        return {p.name: p.value.copy() for p in self.params()}

    def load_state_dict(self, state, strict=True):
        """Copy the arrays of a state_dict() into the parameters, in place (machines and
        graphs holding them see the new values). Every name must match (strict=False: the
        names both have), with the parameter's shape; nothing changes unless all fit."""
        if not hasattr(state, "items"):
            raise UsageError(f"load_state_dict takes a dict name -> array, got {type(state).__name__}")
        mine = {p.name: p for p in self.params()}
        missing = sorted(set(mine) - set(state))
        extra = sorted(set(state) - set(mine))
        if strict and (missing or extra):
            raise CheckpointError(f"{self.name or type(self).__name__}.load_state_dict: "
                                  + "; ".join(f"{what}: {', '.join(names)}" for what, names in
                                              (("missing", missing), ("unexpected", extra)) if names))
        todo = []
        for name, value in state.items():
            p = mine.get(name)
            if p is None:
                continue
            arr = np.asarray(value)
            if arr.shape != p.shape or arr.dtype.kind != "f":
                raise CheckpointError(f"load_state_dict: {name!r} is {arr.shape} {arr.dtype}, the "
                                      f"parameter is {p.shape} {p.dtype}")
            todo.append((p, arr))
        for p, arr in todo:
            np.copyto(p.value, arr, casting="same_kind")

    def extra_repr(self):
        """What __repr__ shows after the class name (sizes, options)."""
        return ""

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
        # PyTorch's layout: the class, then each child on its own line, indented
        args = ", ".join(x for x in (repr(self.name) if self.name else "", self.extra_repr()) if x)
        kids = self._children()
        if not kids:
            return f"{type(self).__name__}({args})"
        lines = [f"{type(self).__name__}({args}) ("]
        for label, kid in kids:
            text = repr(kid) if isinstance(kid, Module) else getattr(kid, "__name__", repr(kid))
            lines.append(f"  ({label}): " + text.replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"

    def _children(self):
        """(label, child) pairs __repr__ lists: each child's name under this one's."""
        pre = self._prefix()
        return [(e.name[len(pre):] if pre and e.name.startswith(pre) else e.name, e)
                for e in self._entries if isinstance(e, Module)]


class Sequential(Module):
    """Apply blocks (or plain functions of one node, such as ev.tanh) one after another."""

    def __init__(self, *layers, name=None):
        super().__init__(name)
        for k, f in enumerate(layers):
            if isinstance(f, Module):
                self.add(f, str(k))
            elif not callable(f):
                raise UsageError(f"Sequential {name!r}: {f!r} is neither a Module nor callable")
        self.layers = list(layers)

    def _children(self):
        return [(str(k), f) for k, f in enumerate(self.layers)]

    def __call__(self, x):
        for f in self.layers:
            x = f(x)
        return x
