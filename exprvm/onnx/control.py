"""Import rows: ONNX's Scan, Loop and If as exprvm's structured control flow.

    Scan  -> ev.scan: the state variables as the carry, the scan inputs as xs (their scan
             axis moved to 0; direction 1 scans from the end), the scan outputs as ys
    Loop  -> with a condition that stays true (the body passes it through, and it is not
             fed at run time): ev.fori_loop(0, M, ...), or ev.scan over the iteration
             numbers 0..M-1 when the body has scan outputs (stacked as ys);
             with a condition the body computes or one fed at run time: ev.while_loop over
             (iteration number, condition, loop-carried values), at most M iterations
    If    -> ev.cond over the enclosing graph's values either branch reads (its operands);
             a condition known at import builds the branch it takes and no cond

A subgraph arrives planned (checks.plan_subgraph) and is built by Builder.subgraph inside
the function the loop or branch traces: names it does not define are the enclosing
graph's values, and a node of the enclosing graph it reads (a weight) is captured by
the loop, as in any ev.scan step.

Refused by name before anything is built: a Loop with scan outputs whose condition the
body computes, or whose trip count or condition is computed at run time (the stacked
outputs would have a length known only then); values of other types than tensors
(sequences, optionals). Refused when built: loop-carried values that change shape from
one iteration to the next, and If branches whose outputs differ in shape or type.
"""
import numpy as np

from .. import ops as ev
from ..core import Node
from ..errors import ExprError, OnnxError
from .ops_math import known, opt
from .table import REQUIRED, imports

SCAN_ATTRS = {"body": ("g", REQUIRED), "num_scan_inputs": ("i", REQUIRED), "scan_input_axes": ("ints", None),
              "scan_input_directions": ("ints", None), "scan_output_axes": ("ints", None),
              "scan_output_directions": ("ints", None)}
MANY = 1 << 16


def _built(b, what, make):
    """make(), its structural ExprErrors (a carry changing shape, branches that differ)
    refused naming what exprvm does not support."""
    try:
        return make()
    except OnnxError:
        raise
    except ExprError as e:
        b.refuse(f"{what} ({e})")


def _move_to_front(x, axis):
    if axis == 0:
        return x
    perm = (axis,) + tuple(a for a in range(len(x.shape)) if a != axis)
    return np.transpose(x, perm) if known(x) else ev.transpose(x, perm)


def _move_from_front(y, axis):
    if axis == 0:
        return y
    rest = list(range(1, len(y.shape)))
    perm = tuple(rest[:axis] + [0] + rest[axis:])
    return np.transpose(y, perm) if known(y) else ev.transpose(y, perm)


def _flip(x):
    return x[::-1] if known(x) else ev.getitem(x, (slice(None, None, -1),))


def _scan_check(at):
    body, m = at["body"], at["num_scan_inputs"]
    if m < 1:
        return "num_scan_inputs", f"{m} (a Scan needs at least one scan input)"
    for name in ("scan_input_directions", "scan_output_directions"):
        if any(d not in (0, 1) for d in at[name] or ()):
            return name, repr(at[name])
    if len(body.inputs) < m:
        return "body", f"a body of {len(body.inputs)} inputs for {m} scan inputs"
    return None


def _axes(b, given, count, what):
    given = list(given) if given is not None else [0] * count
    if len(given) != count:
        b.fail(f"{what} has {len(given)} entries for {count} values")
    return given


def _axis(b, axis, ndim):
    if not -ndim <= axis < ndim:
        b.fail(f"scan axis {axis} is out of range for a value of {ndim} dimensions")
    return axis % ndim


@imports("Scan", attrs=SCAN_ATTRS, outputs=MANY, fold=False, check=_scan_check)
def scan(b, ins, at):
    body, m = at["body"], at["num_scan_inputs"]
    n = len(ins) - m
    if any(v is None for v in ins):
        b.fail("a state or scan input is left empty")
    if n < 0 or len(body.inputs) != len(ins) or len(body.outputs) < n:
        b.fail(f"{len(ins)} inputs and a body of {len(body.inputs)} inputs and {len(body.outputs)} outputs "
               f"do not fit {m} scan inputs")
    k = len(body.outputs) - n
    in_axes = _axes(b, at["scan_input_axes"], m, "scan_input_axes")
    in_dirs = _axes(b, at["scan_input_directions"], m, "scan_input_directions")
    out_axes = _axes(b, at["scan_output_axes"], k, "scan_output_axes")
    out_dirs = _axes(b, at["scan_output_directions"], k, "scan_output_directions")
    reverse = all(d == 1 for d in in_dirs)      # one reverse scan, else flipped inputs
    xs = []
    for x, a, d in zip(ins[n:], in_axes, in_dirs):
        x = _move_to_front(x, _axis(b, a, len(x.shape)))
        xs.append(_flip(x) if (d == 1) != reverse else x)
    if len({x.shape[0] for x in xs}) > 1:
        b.fail(f"the scan inputs differ in length along their scan axes: {[x.shape[0] for x in xs]}")
    names = [name for name, _, _ in body.inputs]

    def step(carry, rows):
        leaves = list(carry) + list(rows)
        outs = b.subgraph(body, rows[0].graph, dict(zip(names, leaves)))
        return tuple(outs[:n]), tuple(outs[n:])

    carry, ys = _built(b, "a Scan whose state changes shape or type from one iteration to the next",
                       lambda: ev.scan(step, tuple(ins[:n]), tuple(xs), reverse=reverse))
    outs = list(carry)
    for y, a, d in zip(ys, out_axes, out_dirs):
        y = _flip(y) if (d == 1) != reverse else y
        outs.append(_move_from_front(y, _axis(b, a, len(y.shape))))
    return tuple(outs)


def _body_counts(body_proto, n_inputs):
    """(loop-carried values, scan outputs) of a Loop's body."""
    carried = max(n_inputs - 2, 0)
    return carried, len(body_proto.output) - 1 - carried


def _loop_static(node):
    """A Loop with scan outputs needs its trip count and condition at import (their length)."""
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    if body is None:
        return ()
    _, k = _body_counts(body, len(node.input))
    return (0, 1) if k > 0 else ()


def passes_condition(body):
    """Does a Loop body's condition output stay what it was given (Identity of its
    condition input, or a constant true)? Then only the trip count ends the loop."""
    producer = {o: s for s in body.steps for o in s.proto.output if o}
    name = body.outputs[0] if body.outputs else None
    for _ in range(len(body.steps) + 1):
        if len(body.inputs) > 1 and name == body.inputs[1][0]:
            return True
        if name in body.initializers:
            return bool(np.all(body.initializers[name]))
        s = producer.get(name)
        if s is None:
            return False
        if s.proto.op_type == "Identity":
            name = s.proto.input[0]
        elif s.proto.op_type == "Constant" and s.attrs.get("value") is not None:
            return bool(np.all(s.attrs["value"]))
        else:
            return False
    return False


def _loop_check(at):
    body = at["body"]
    if len(body.inputs) < 2 or not body.outputs:
        return "body", "a body without the iteration number and condition inputs, or without outputs"
    k = len(body.outputs) - 1 - (len(body.inputs) - 2)
    if k > 0 and not passes_condition(body):
        return "body", ("scan outputs of a loop whose condition the body computes (their length is "
                        "known only at run time)")
    return None


def _scalar(b, v, what, dtype):
    """A Loop's trip count or condition: a one-element value, as an int / bool when known,
    else a scalar node."""
    if v is None:
        return None
    if isinstance(v, Node) and v.op == "const":     # NOTE: the Builder makes nodes of known values
        v = np.asarray(v.value)                      # when all of a node's inputs are known
    if int(np.prod(v.shape)) != 1:
        b.fail(f"the {what} must have one element, got shape {tuple(v.shape)}")
    if known(v):
        return dtype(np.asarray(v).reshape(()))
    v = ev.reshape(v, ()) if v.shape != () else v
    return v if np.dtype(v.dtype) == np.dtype(np.int64) or dtype is bool else ev.astype(v, np.int64)


@imports("Loop", attrs={"body": ("g", REQUIRED)}, outputs=MANY, fold=False, check=_loop_check,
         static_if=_loop_static, notes="scan outputs with a condition the body computes, or with a trip "
                                       "count or condition computed at run time")
def loop(b, ins, at):
    body = at["body"]
    init = list(ins[2:])
    n = len(init)
    if any(v is None for v in init):
        b.fail("a loop-carried value is left empty")
    if len(body.inputs) != n + 2 or len(body.outputs) < n + 1:
        b.fail(f"{n} loop-carried values, but the body has {len(body.inputs)} inputs and "
               f"{len(body.outputs)} outputs (it takes the iteration number, the condition and each)")
    k = len(body.outputs) - 1 - n
    trips = _scalar(b, opt(ins, 0), "trip count M", int)
    go = _scalar(b, opt(ins, 1), "condition", bool)
    names = [name for name, _, _ in body.inputs]

    def run(i, cond, carried):
        outs = b.subgraph(body, i.graph, dict(zip(names, [i, cond] + list(carried))))
        return outs[0], outs[1:1 + n], outs[1 + n:]

    if passes_condition(body) and not isinstance(go, Node):
        if trips is None and go is not False:
            b.refuse("a Loop with neither a trip count nor a condition that can end it")
        trips = 0 if go is False else trips
        if isinstance(trips, Node):          # the checks left no scan outputs here
            return _built(b, "a Loop whose carried values change shape or type", lambda: ev.fori_loop(
                0, trips, lambda i, c: tuple(run(i, np.array(True), c)[1]), tuple(init)))
        b.limit((max(trips, 0),), "its iteration count")
        steps = np.arange(max(trips, 0), dtype=np.int64)

        def step(carry, i):
            _, carried, ys = run(i, np.array(True), carry)
            return tuple(carried), tuple(ys)

        carry, ys = _built(b, "a Loop whose carried values change shape or type",
                           lambda: ev.scan(step, tuple(init), steps))
        return tuple(carry) + tuple(ys)
    return _while(b, init, trips, go, run)


def _while(b, init, trips, go, run):
    """A Loop whose condition can end it: ev.while_loop over (iteration, condition, carried)."""
    bound = isinstance(trips, (int, np.integer)) and trips <= b.plan.max_elements
    start = (np.array(0, np.int64), np.array(True) if go is None else go)

    def cond_fn(state):
        i, c = state[0], state[1]
        return ev.logical_and(c, i < trips) if trips is not None and not bound else c

    def body_fn(state):
        i, c, carried = state[0], state[1], state[2:]
        c, carried, _ = run(i, c, carried)
        if not isinstance(c, Node):
            c = np.asarray(c, np.bool_)
        elif c.dtype != np.bool_:
            c = ev.not_equal(c, 0)
        return (i + 1, c) + tuple(carried)

    out = _built(b, "a Loop whose carried values change shape or type", lambda: ev.while_loop(
        cond_fn, body_fn, start + tuple(init), max_iterations=max(int(trips), 0) if bound else None))
    return tuple(out[2:])


@imports("If", attrs={"then_branch": ("g", REQUIRED), "else_branch": ("g", REQUIRED)}, outputs=MANY, fold=False,
         notes="branches whose outputs differ in shape or type")
def if_(b, ins, at):
    cond = _scalar(b, ins[0], "condition", bool)
    then, other = at["then_branch"], at["else_branch"]
    if not isinstance(cond, Node):           # known at import: the branch it takes
        return tuple(b.subgraph(then if cond else other, b.g, {}))
    if cond.dtype != np.bool_:
        cond = ev.not_equal(cond, 0)
    names = list(dict.fromkeys(then.reads + other.reads))
    operands = [(name, b.value(name)) for name in names]
    operands = [(name, v) for name, v in operands if isinstance(v, Node)] or [(None, cond)]

    def branch(plan):
        def fn(*leaves):
            bound = {name: leaf for (name, _), leaf in zip(operands, leaves) if name is not None}
            return tuple(b.subgraph(plan, leaves[0].graph, bound))
        return fn

    return tuple(_built(b, "If branches whose outputs differ in shape or type",
                        lambda: ev.cond(cond, branch(then), branch(other), *[v for _, v in operands])))
