"""Traced functions: Python functions of arrays compiled per signature (as tf.function
and jax.jit do), and JAX's functional gradients.

    f = ev.function(fn)                      # or @ev.function, @ev.function(max_programs=4)
    f(x_batch)                               # traced once per (shapes, dtypes, static args)
    vg = ev.value_and_grad(loss_fn, argnums=0)
    loss, g = vg(w, x)                       # the gradient in w's tree
    ev.grad(loss_fn)(w, x)                   # the gradient alone
    ev.grad(cost, wrt)                       # the node form: gradient nodes in cost's graph

In: a function building a graph from its arguments' nodes. Out: a Function (function.py)
that calls a TapeMachine per signature and returns arrays the caller owns.
"""
from ..core import Node, grad as _grad_nodes
from ..errors import GradError, UsageError
from .function import Function
from .trees import is_module

__all__ = ["Function", "function", "grad", "value_and_grad"]


def function(fn=None, **options):
    """A traced function: ``fn(*arrays)`` traced into a graph on the first call with each
    signature (arrays' shapes and dtypes, the other arguments' values), compiled on a
    TapeMachine, cached (max_programs, least recently used out) and run. Use it as
    ev.function(fn), @ev.function or @ev.function(max_programs=..., backend=...); options
    other than max_programs go to the TapeMachine. See exprvm/tracing/function.py."""
    if fn is None:
        return lambda f: Function(f, **options)
    return Function(fn, **options)


def _argnums(argnums):
    if isinstance(argnums, int):
        return (argnums,), True
    nums = tuple(argnums)
    if not nums or not all(isinstance(k, int) for k in nums):
        raise UsageError(f"argnums must be an int or a tuple of ints, got {argnums!r}")
    return nums, False


def value_and_grad(fn, argnums=0, **options):
    """A traced function returning (``fn(*args)``, the gradient of it with respect to the
    arguments at argnums): fn returns a scalar node; each gradient has its argument's
    tree (an array's shape; an ev.nn model's {parameter name: gradient}); a tuple of
    argnums gives a tuple of gradients. Options as for ev.function."""
    if not callable(fn):
        raise UsageError(f"ev.value_and_grad takes a function, got {type(fn).__name__}")
    nums, single = _argnums(argnums)
    return Function(fn, wrt=(nums, single, True), **options)


def grad(fn, wrt=None, seed=None, *, argnums=0, **options):
    """Gradients, in two forms.

    ev.grad(cost, wrt, seed=None): gradient nodes of the cost node with respect to a node,
    a list of nodes, or an ev.nn model ({parameter name: gradient node} of the parameters
    the cost's graph uses); see exprvm/core/grad.py.

    ev.grad(fn, argnums=0): JAX's functional form, a traced function returning the
    gradient of ``fn(*args)`` (a scalar node) with respect to the arguments at argnums.
    """
    if callable(fn) and not isinstance(fn, (Node, type)):
        if wrt is not None or seed is not None:
            raise UsageError("ev.grad(fn) takes argnums=, not wrt or seed (those are the node form's: "
                             "ev.grad(cost, wrt, seed))")
        nums, single = _argnums(argnums)
        return Function(fn, wrt=(nums, single, False), **options)
    if wrt is None:
        what = fn.label if isinstance(fn, Node) else "cost"
        raise UsageError(f"ev.grad takes a cost node and what to differentiate it with respect to, "
                         f"ev.grad({what}, wrt) (a node, a list of nodes or an ev.nn model), or a "
                         f"function, ev.grad(fn); got {type(fn).__name__} and no wrt")
    if isinstance(fn, Node) and is_module(wrt):
        nodes = {p.name: p.node_in(fn.graph) for p in wrt.params() if getattr(p, "trainable", True)}
        nodes = {k: n for k, n in nodes.items() if n is not None}
        if not nodes:
            raise GradError(f"ev.grad: the model {wrt.name!r} has no parameter in {fn.label}'s graph")
        return dict(zip(nodes, _grad_nodes(fn, list(nodes.values()), seed)))
    return _grad_nodes(fn, wrt, seed)      # the node form (its errors name what is wrong)
