"""ev.grad through a scan: a reverse scan over the residuals a forward scan stores.

Differentiating a scan splits its body's VJP (core.body.Body.vjp_parts: gradient nodes
added to the body's own graph) along the loop:

- residuals: forward nodes the gradient nodes read that change from step to step (they
  depend on the carries or the x rows). The forward scan is asked for them as extra
  stacked ys: the *augmented* scan has the same inputs and the same body graph with more
  outputs, so the compiler computes the user's scan and it as one loop (and the
  LispMachine, which differentiates at run time, never builds it). Forward nodes that
  depend on captured nodes only are recomputed by the gradient body instead (the
  compiler hoists them out of its loop).
- the gradient body: carries the carries' gradients; reads per step the residuals, the
  ys' gradients and the x rows; gives per step the x rows' gradients (stacked ys) and
  the captured nodes' gradients (summed over the steps: the compiler batches them).

It runs as a scan in the other direction over the same rows (and the same length node).
"""
import numpy as np

from ...core import OPS, build_node
from ...core.body import Body
from .common import results_of, spec


def gradient_bodies(body, n_carry, n_x, present, summed, shiftable=False):
    """(augmented body, gradient body, plan) for a scan body, given which of its outputs get
    a gradient and which ys are summed; plan says where the gradient body's inputs come
    from and what its outputs are the gradients of.

    The gradient body's inputs: the carries' gradients (its carries); per step, the
    residuals, the stacked ys' gradients and the x rows (its xs); per run, the summed ys'
    gradients and the captured nodes (its captures). Its outputs: the carries' gradients,
    the x rows' gradients (stacked), the captured nodes' gradients (summed)."""
    seeds, grads = body.vjp_parts(present)
    ins = body.inputs
    x_leaves, caps = ins[n_carry:n_carry + n_x], ins[n_carry + n_x:]
    n_y = len(body.outputs) - n_carry
    varying = body.varying(range(n_carry + n_x))
    forward = {n.id for n in body.order} | {n.id for n in ins}
    dcarry_pos = [k for k in range(n_carry) if present[k]]
    y_pos = [j for j in range(n_y) if present[n_carry + j]]
    seed_of = dict(zip([k for k in range(len(present)) if present[k]], seeds))
    outs = []
    for k in dcarry_pos:            # the carries' gradients (zeros where none flows)
        g = grads[k]
        outs.append(g if g is not None else body.graph.constant(np.zeros(ins[k].shape, ins[k].dtype)))
    dx_pos = [i for i in range(n_x) if grads[n_carry + i] is not None]
    dcap_pos = [i for i in range(len(caps)) if grads[n_carry + n_x + i] is not None]
    outs += [grads[n_carry + i] for i in dx_pos] + [grads[n_carry + n_x + i] for i in dcap_pos]

    # Residuals: walk back from the gradient outputs, stopping at varying forward nodes
    # (the carries' own leaves included: a step's incoming carry is stored too). A remat
    # body stores its incoming carries only, and its gradient recomputes the rest.
    stop = {ins[k].id for k in range(n_carry, len(ins))} | {s.id for s in seeds}
    carried = {ins[k].id for k in range(n_carry)}
    # values the loop stacks anyway (its ys) are read from there, never recomputed
    stacked = set() if body.remat else {o.id for j, o in enumerate(body.outputs[n_carry:]) if not summed[j]}
    residuals, seen, stack = {}, set(), list(outs)
    while stack:
        n = stack.pop()
        if n.id in seen or n.id in stop:
            continue
        seen.add(n.id)
        if n.id in forward and n.id in varying and (n.id in carried or n.id in stacked
                                                    or not (body.remat or _cheap(n))):
            residuals[n.id] = n
            continue
        stack.extend(n.inputs)
    residuals = [residuals[i] for i in sorted(residuals)]

    # A residual that already is a stacked y of the scan is read from there; a step's
    # incoming carry, when the carry is also a stacked y, is that y one row back (the
    # first step's: the initial carry), when the rows of the steps are known (shiftable).
    y_of = {}
    for j, o in enumerate(body.outputs[n_carry:]):
        if not summed[j]:
            y_of.setdefault(o.id, j)
    # (A carry that is no y is stacked as one more output for it: the loop then keeps it
    # in those rows, and no step copies its incoming carry.)
    extra = [r for r in residuals if r.id not in y_of and (not shiftable or r.id not in carried)]
    shifted = {}
    if shiftable:
        for k in range(n_carry):
            if ins[k].id not in {r.id for r in residuals}:
                continue
            new = body.outputs[k]
            j = y_of.get(new.id)
            if j is None:
                if all(new is not e for e in extra):
                    extra.append(new)
                j = n_y + next(i for i, e in enumerate(extra) if e is new)
            shifted[ins[k].id] = (j, k)
    augmented = Body(body.graph, ins, body.outputs + tuple(extra), body.name, body.site, body.remat)
    augmented.visible = body.visible
    res_source = [("y", y_of[r.id]) if r.id in y_of else
                  ("shift", *shifted[r.id]) if r.id in shifted else
                  ("extra", next(i for i, e in enumerate(extra) if e is r))
                  for r in residuals]

    gradient = Body(body.graph,
                    [seed_of[k] for k in dcarry_pos] + residuals
                    + [seed_of[n_carry + j] for j in y_pos if not summed[j]] + list(x_leaves)
                    + [seed_of[n_carry + j] for j in y_pos if summed[j]] + list(caps),
                    outs, f"{body.name} (gradient)", body.site)
    plan = dict(dcarry_pos=dcarry_pos, y_pos=y_pos, dx_pos=dx_pos, dcap_pos=dcap_pos,
                res_source=res_source, n_extra=len(extra))
    return augmented, gradient, plan


def initial_carry_grads(gs, positions, carries, g):
    """The gradient each carry at `positions` gets from after the loop: its result's
    gradient, or zeros where none flows in."""
    out = []
    for k in positions:
        gk = gs[k]
        if gk is None:
            gk = build_node(OPS["broadcast_to"], (g.constant(0.0, dtype=carries[k].dtype),),
                            {"shape": carries[k].shape})
        out.append(gk)
    return out


# Elementwise ops whose values are stored per step rather than recomputed: each costs
# tens of cycles an element (a polynomial or a division), reading its value back one
# load, and their derivatives are written in terms of their values anyway.
TRANSCENDENTAL = frozenset({"exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "tanh", "sigmoid",
                            "softplus", "elu", "gelu", "erf", "sin", "cos", "tan", "sinh", "cosh",
                            "arcsin", "arccos", "arctan", "arctan2", "arcsinh", "arccosh", "arctanh",
                            "sinc", "pow", "sqrt", "div", "reciprocal", "hypot", "logaddexp",
                            "logaddexp2", "fmod", "remainder"})


def _cheap(n):
    """Is a forward value cheaper to recompute in the gradient body than to store per step?
    Products, reductions and transcendental elementwise values are stored; views and
    arithmetic (add, mul, where, relu, ...) recomputed, fused into the gradient's own
    kernels (JAX's dots_saveable policy, with the values a step's kernels spend their
    time on kept too)."""
    op = n.opdef
    return (op is not None and (op.elementwise or op.view) and "rng" not in n.params
            and op.name not in TRANSCENDENTAL)


def scan_vjp(gs, ans, *inputs, body, n_carry, n_x, rows, steps, reverse, summed, results):
    """vjp_all of scan: gradient nodes of the scan's inputs given its results' gradients
    (None: zero)."""
    n_y = len(body.outputs) - n_carry
    floats = [np.dtype(dt).kind == "f" for _, dt in results]
    present = tuple([floats[k] for k in range(n_carry)]
                    + [gs[n_carry + j] is not None and floats[n_carry + j] for j in range(n_y)])
    shiftable = not reverse or steps == rows
    augmented, gradient, plan = body.cache(("scan", present, n_carry, n_x, summed, shiftable),
                                           lambda: gradient_bodies(body, n_carry, n_x, present, summed,
                                                                   shiftable))
    g = ans.graph
    n_cap = len(body.inputs) - n_carry - n_x
    carries, xs = inputs[:n_carry], inputs[n_carry:n_carry + n_x]
    caps = inputs[n_carry + n_x:n_carry + n_x + n_cap]

    # The augmented forward scan: the same loop with the residuals as more stacked ys.
    n_out = len(body.outputs)
    if plan["n_extra"]:
        extra = augmented.outputs[n_out:]
        fparams = dict(ans.params, body=augmented, summed=summed + (False,) * len(extra),
                       results=results + tuple(((rows,) + r.shape, r.dtype.str) for r in extra))
        fwd = build_node(OPS["scan"], inputs, fparams)
    else:
        fwd = ans
    fres = results_of(fwd)
    res_nodes = []
    for source in plan["res_source"]:
        if source[0] == "y":
            res_nodes.append(fres[n_carry + source[1]])
        elif source[0] == "extra":
            res_nodes.append(fres[n_out + source[1]])
        else:
            res_nodes.append(_shifted(fres[n_carry + source[1]], carries[source[2]], rows, reverse))

    dinit = initial_carry_grads(gs, plan["dcarry_pos"], carries, g)
    dys = {j: gs[n_carry + j] for j in plan["y_pos"]}
    stacked = [dys[j] for j in plan["y_pos"] if not summed[j]]
    per_run = [dys[j] for j in plan["y_pos"] if summed[j]]
    outer = (tuple(dinit) + tuple(res_nodes) + tuple(stacked) + tuple(xs) + tuple(per_run)
             + tuple(caps) + (() if steps is not None else (inputs[-1],)))
    nd, n_dx = len(plan["dcarry_pos"]), len(plan["dx_pos"])
    outs = gradient.outputs
    bresults = (tuple(spec(o) for o in outs[:nd])
                + tuple(((rows,) + o.shape, o.dtype.str) for o in outs[nd:nd + n_dx])
                + tuple(spec(o) for o in outs[nd + n_dx:]))
    bparams = dict(body=gradient, n_carry=nd, n_x=len(res_nodes) + len(stacked) + n_x, rows=rows,
                   steps=steps, reverse=not reverse,
                   summed=(False,) * n_dx + (True,) * len(plan["dcap_pos"]), results=bresults)
    bres = results_of(build_node(OPS["scan"], outer, bparams))
    out = [None] * len(inputs)
    for i, k in enumerate(plan["dcarry_pos"]):
        out[k] = bres[i]
    for i, p in enumerate(plan["dx_pos"]):
        out[n_carry + p] = bres[nd + i]
    for i, p in enumerate(plan["dcap_pos"]):
        out[n_carry + n_x + p] = bres[nd + n_dx + i]
    return out


def _shifted(ys, init, rows, reverse):
    """The carry each step read, from the stacked new carries ys: row t holds row t-1 of
    ys (t+1 for a reverse scan), and the first step's row the initial carry."""
    first = build_node(OPS["reshape"], (init,), {"shape": (1,) + tuple(init.shape)})
    if rows <= 1:
        return first
    part = build_node(OPS["getitem"], (ys,), {"index": (slice(1, rows) if reverse else slice(0, rows - 1),)})
    pieces = (part, first) if reverse else (first, part)
    return build_node(OPS["concat"], pieces, {"axis": 0})
