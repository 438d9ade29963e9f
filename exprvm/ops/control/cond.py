"""The cond op: one of two traced branches, chosen by a scalar predicate at run time.

Inputs: the predicate (a bool or integer scalar; nonzero is true), the operands
(n_ops), then the nodes the true branch captured, then the false branch's. Params:

    true, false   the traced branches: inputs operands + the true branch's captures +
                  the false branch's (each reads its own), outputs the results
    n_ops
    results       (shape, dtype) per result (both branches give the same)

Only the taken branch runs. Its VJP is a cond with the same predicate over the two
branches' VJPs; each recomputes its branch's forward values from the operands (no
residuals to store), and gives zeros for what the other branch captured.
"""
import numpy as np

from ...core import OPS, build_node, defop
from ...core.body import Body
from ...errors import ShapeError
from .common import results_of, spec, tuple_rule


def _rule(pred, *inputs, true, false, n_ops, results):
    if pred.shape != () or pred.dtype.kind not in "biu":
        raise ShapeError(f"the predicate must be a bool or integer scalar, got {pred.shape} {pred.dtype.name}")
    for k, (x, leaf) in enumerate(zip(inputs, true.inputs)):
        if x.shape != leaf.shape or x.dtype != leaf.dtype:
            raise ShapeError(f"operand {k}: {x.shape} {x.dtype.name}, the branches take {leaf.shape} "
                             f"{leaf.dtype.name}")
    return tuple_rule(results=results)


def _finish(outs, results):
    return tuple(np.array(o, dtype=np.dtype(dt), copy=True) for o, (_, dt) in zip(outs, results))


def cond_impl(pred, *args, true, false, n_ops, results):
    """The numpy reference: walk the taken branch."""
    branch = true if bool(pred) else false
    return _finish(branch.outputs_of(branch.evaluate(list(args))), results)


def cond_record(pred, *args, true, false, n_ops, results):
    branch = true if bool(pred) else false
    tapes = {}
    env = branch.evaluate(list(args), tapes)
    return _finish(branch.outputs_of(env), results), (branch, env, tapes)


def cond_backprop(tape, gs, ans, pred, *args, true, false, n_ops, results):
    branch, env, tapes = tape
    grads = branch.backprop(env, tapes, list(gs))
    out = [None]
    for x, gx in zip(args, grads):
        if gx is None and np.asarray(x).dtype.kind == "f":
            gx = np.zeros(np.shape(x), np.asarray(x).dtype)
        out.append(gx)
    return out


def _gradient_branch(branch, present):
    """A branch's VJP as a body: inputs operands + seeds + captures, outputs a gradient per
    float input (zeros where none flows)."""
    seeds, grads = branch.vjp_parts(present)
    outs = [gx if gx is not None else branch.graph.constant(np.zeros(x.shape, x.dtype))
            for x, gx in zip(branch.inputs, grads) if x.dtype.kind == "f"]
    return seeds, outs


def cond_vjp(gs, ans, pred, *inputs, true, false, n_ops, results):
    """vjp_all of cond: a cond over the branches' VJPs with the same predicate."""
    present = tuple(g is not None and np.dtype(dt).kind == "f" for g, (_, dt) in zip(gs, results))

    def make():
        made = []
        for b in (true, false):
            seeds, outs = _gradient_branch(b, present)
            ins = list(b.inputs[:n_ops]) + list(seeds) + list(b.inputs[n_ops:])
            made.append(Body(b.graph, ins, outs, f"{b.name} (gradient)", b.site))
        return tuple(made)

    gtrue, gfalse = true.cache(("cond", present, id(false)), make)
    seeds = [g for g, p in zip(gs, present) if p]
    outer = (pred,) + tuple(inputs[:n_ops]) + tuple(seeds) + tuple(inputs[n_ops:])
    params = dict(true=gtrue, false=gfalse, n_ops=n_ops + len(seeds),
                  results=tuple(spec(o) for o in gtrue.outputs))
    gres = results_of(build_node(OPS["cond"], outer, params))
    out, it = [None], iter(gres)
    for x in inputs:
        out.append(next(it) if x.dtype.kind == "f" else None)
    return out


defop("cond", cond_impl, _rule, multiple_results=True, vjp_all=cond_vjp, record=cond_record,
      backprop=cond_backprop, doc="One of two branches, chosen at run time (see ev.cond).")
