"""The while_loop op: a body applied to a carry while a condition holds.

Inputs: the carries' initial values (n_carry), then the nodes the condition captured,
then those the body captured. Params:

    cond            the traced condition: inputs carries + its captures, output a bool scalar
    body            the traced body: inputs carries + its captures, outputs new carries,
                    then (an augmented loop, see below) values stacked per iteration
    n_carry
    max_iterations  the most iterations (None: unbounded, and not differentiable)
    results         carries, the iteration count (int64 scalar), the stacked values

Value: (final carries..., count, stacks...). A loop stops when its condition is false
or after max_iterations iterations, whichever comes first. Rows of the stacks past the
count are zeros.

ev.grad through a bounded loop: the same loop asked to stack the residuals of every
iteration (the scan gradient's residuals, scan_grad.py), then a reverse scan over them
whose length is the iteration count (TensorFlow's while_v2 keeps its accumulators the
same way, and needs maximum_iterations to bound them).
"""
import numpy as np

from ...core import OPS, build_node, defop
from ...core.body import Body
from ...errors import GradError, ShapeError
from .common import results_of, spec, tuple_rule
from .scan_grad import gradient_bodies, initial_carry_grads


def split(args, cond, body, n_carry):
    n_cc = len(cond.inputs) - n_carry
    carries = list(args[:n_carry])
    caps_c = list(args[n_carry:n_carry + n_cc])
    caps_b = list(args[n_carry + n_cc:])
    return carries, caps_c, caps_b


def _rule(*inputs, cond, body, n_carry, max_iterations, results):
    carries, caps_c, caps_b = split(inputs, cond, body, n_carry)
    for k, (x, leaf) in enumerate(zip(carries, body.inputs)):
        if x.shape != leaf.shape or x.dtype != leaf.dtype:
            raise ShapeError(f"carry {k}: {x.shape} {x.dtype.name}, the body takes {leaf.shape} "
                             f"{leaf.dtype.name}")
    if max_iterations is not None and max_iterations < 0:
        raise ShapeError(f"max_iterations {max_iterations} is negative")
    return tuple_rule(results=results)


def _loop(args, cond, body, n_carry, max_iterations, results, tape=None):
    carries, caps_c, caps_b = split(args, cond, body, n_carry)
    n_stack = len(body.outputs) - n_carry
    stacks = [np.zeros(results[n_carry + 1 + j][0], results[n_carry + 1 + j][1]) for j in range(n_stack)]
    i = 0
    while max_iterations is None or i < max_iterations:
        (go,) = cond.outputs_of(cond.evaluate(carries + caps_c))
        if not go:
            break
        tapes = {} if tape is not None else None
        env = body.evaluate(carries + caps_b, tapes)
        outs = body.outputs_of(env)
        carries = outs[:n_carry]
        for j, s in enumerate(outs[n_carry:]):
            stacks[j][i] = s
        if tape is not None:
            tape.append((env, tapes))
        i += 1
    out = [np.array(c, dtype=np.dtype(results[k][1]), copy=True) for k, c in enumerate(carries)]
    return tuple(out + [np.array(i, np.int64)] + stacks)


def while_impl(*args, cond, body, n_carry, max_iterations, results):
    """The numpy reference: a Python while loop walking the bodies."""
    return _loop(args, cond, body, n_carry, max_iterations, results)


def while_record(*args, cond, body, n_carry, max_iterations, results):
    tape = []
    return _loop(args, cond, body, n_carry, max_iterations, results, tape), tape


def while_backprop(tape, gs, ans, *args, cond, body, n_carry, max_iterations, results):
    """Run-time VJP over the recorded iterations, last first."""
    carries, caps_c, caps_b = split(args, cond, body, n_carry)
    dcarry = list(gs[:n_carry])
    dcaps = [np.zeros(np.shape(c), c.dtype) if c.dtype.kind == "f" else None for c in caps_b]
    for env, tapes in reversed(tape):
        seeds = dcarry + [None] * (len(body.outputs) - n_carry)
        grads = body.backprop(env, tapes, seeds)
        dcarry = grads[:n_carry]
        for i, gc in enumerate(grads[n_carry:]):
            if gc is not None and dcaps[i] is not None:
                dcaps[i] += gc
    dinit = [None if d is None else np.array(d, dtype=c.dtype, copy=True) for d, c in zip(dcarry, carries)]
    return dinit + [None] * len(caps_c) + dcaps


def while_vjp(gs, ans, *inputs, cond, body, n_carry, max_iterations, results):
    """vjp_all of while_loop: a reverse scan over the residuals of every iteration, as long
    as the loop ran."""
    if max_iterations is None:
        raise GradError(f"ev.grad through ev.while_loop ({ans.label} made at {ans.site}) needs "
                        "max_iterations= (the loop stores every iteration's residuals for its "
                        "gradient, and max_iterations bounds them)")
    carries, caps_c, caps_b = split(inputs, cond, body, n_carry)
    floats = [np.dtype(results[k][1]).kind == "f" for k in range(n_carry)]
    present = tuple(floats)
    base = body.cache(("while base", n_carry), lambda: _carry_body(body, n_carry))
    augmented, gradient, plan = base.cache(("scan", present, n_carry, 0, ()),
                                           lambda: gradient_bodies(base, n_carry, 0, present, ()))
    g = ans.graph
    n_out = len(body.outputs)
    extra = augmented.outputs[n_out:]
    if extra:
        wparams = dict(ans.params, body=augmented,
                       results=results + tuple(((max_iterations,) + r.shape, r.dtype.str) for r in extra))
        fwd = build_node(OPS["while_loop"], inputs, wparams)
    else:
        fwd = ans
    fres = results_of(fwd)
    count = fres[n_carry]
    res_nodes = [fres[n_carry + 1 + j] for kind, j in plan["res_source"]]
    dinit = initial_carry_grads(gs, plan["dcarry_pos"], carries, g)
    outer = tuple(dinit) + tuple(res_nodes) + tuple(caps_b) + (count,)
    nd = len(plan["dcarry_pos"])
    outs = gradient.outputs
    bparams = dict(body=gradient, n_carry=nd, n_x=len(res_nodes), rows=max_iterations, steps=None,
                   reverse=True, summed=(True,) * len(plan["dcap_pos"]),
                   results=tuple(spec(o) for o in outs))
    bres = results_of(build_node(OPS["scan"], outer, bparams))
    out = [None] * len(inputs)
    for i, k in enumerate(plan["dcarry_pos"]):
        out[k] = bres[i]
    n_cc = len(caps_c)
    for i, p in enumerate(plan["dcap_pos"]):
        out[n_carry + n_cc + p] = bres[nd + i]
    return out


def _carry_body(body, n_carry):
    """The loop's body with only its carries as outputs (what its gradient is built from)."""
    if len(body.outputs) == n_carry:
        return body
    return Body(body.graph, body.inputs, body.outputs[:n_carry], body.name, body.site)


defop("while_loop", while_impl, _rule, multiple_results=True, vjp_all=while_vjp, record=while_record,
      backprop=while_backprop, doc="A body applied while a condition holds (see ev.while_loop).")
