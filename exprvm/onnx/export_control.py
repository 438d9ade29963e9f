"""Export rows of the control-flow ops: ev.scan, ev.fori_loop and ev.while_loop as ONNX
Scan or Loop, ev.cond as If, and their results (op "result") as the loop's outputs.

    scan, xs, a length known when the graph is built  -> Scan (reverse: every direction 1)
    scan with a length node, without xs, or over
      ev.fori_loop's index range                      -> Loop (trip count M, no condition)
    while_loop                                        -> Loop (M = max_iterations, the
                                                         condition before and after each step)
    cond                                              -> If

A body becomes an ONNX subgraph. Its inputs are ONNX's: Scan's state variables, then one
row of each scan input; Loop's iteration number, condition, then the loop-carried values.
A node the body captured from an enclosing graph (model weights) is read by its outer
name, as ONNX lets a subgraph read its enclosing graphs' values; constants stay
initializers of the model. Rows of stacked results past the number of steps are zeros in
exprvm, so a Loop's stacked outputs are padded to the rows the exprvm node declares.
"""
import re

import numpy as np

from .export_table import INT64_MAX, INT64_MIN, exports, reduce
from .proto import ONNX_TYPES

INT64 = ONNX_TYPES[np.dtype(np.int64)]
BOOL = ONNX_TYPES[np.dtype(np.bool_)]


@exports("result")
def _result(e, n, ins):
    return ins[0][n.params["index"]]


def _clean(label):
    """A body input's name hint: letters, digits and underscores."""
    return re.sub(r"\W+", "_", label).strip("_") or "v"


class _Scope:
    """Writes a body as an ONNX subgraph: the nodes it emits go to a list of its own."""

    def __init__(self, e, name):
        self.e, self.name = e, name
        self.inputs = []

    def __enter__(self):
        self.outer, self.e.nodes = self.e.nodes, []
        return self

    def __exit__(self, *exc):
        self.nodes, self.e.nodes = self.e.nodes, self.outer
        return False

    def declare(self, leaf, dtype=None, shape=()):
        """A subgraph input standing for a body leaf (or a fresh int64/bool scalar): its name."""
        name = self.e.fresh(_clean(leaf.label) if leaf is not None else dtype)
        if leaf is not None:
            self.e.names[leaf] = name
            self.inputs.append(self.e.value_info(name, leaf))
        else:
            code = INT64 if dtype == "iteration" else BOOL
            self.inputs.append(self.e.onnx.helper.make_tensor_value_info(name, code, shape))
        return name

    def graph(self, outputs):
        """The GraphProto: outputs [(name inside the subgraph, node whose type it has, shape)]."""
        vis = [self.e.value_info(nm, n, shape) for nm, n, shape in outputs]
        return self.e.onnx.helper.make_graph(self.nodes, self.e.fresh(self.name), self.inputs, vis)


def _emit_body(e, body, bound):
    """Write body's nodes into the current graph, its inputs bound to names: the names of
    its outputs (each through an Identity, so that every output is a value of its own)."""
    for leaf, name in zip(body.inputs, bound):
        if name is not None:
            e.names[leaf] = name
    e.emit(body.order)
    return [e.add("Identity", [e.names[o]]) for o in body.outputs]


def _as_bool(e, name, node):
    return name if node.dtype == np.bool_ else e.add("Cast", [name], to=BOOL)


def _pad_rows(e, name, node, rows, steps):
    """Rows steps..rows-1 of a stacked result as zeros (steps: an int, or an int64 scalar name)."""
    if isinstance(steps, (int, np.integer)):
        if steps == rows:
            return name
        pads = e.const([0] * node.ndim + [rows - int(steps)] + [0] * (node.ndim - 1))
    else:
        rest = e.add("Unsqueeze", [e.add("Sub", [e.const(rows), steps]), e.const([0])])
        pads = e.add("Concat", [e.const([0] * node.ndim), rest, e.const([0] * (node.ndim - 1))], axis=0)
    return e.add("Pad", [name, pads, e.like(0, node)], mode="constant")


def _flip_rows(e, name):
    return e.add("Slice", [name, e.const([-1]), e.const([INT64_MIN]), e.const([0]), e.const([-1])])


def _index_range(x, rows):
    """The first value of x when it is a constant index range (ev.fori_loop's), else None."""
    if x.op != "const" or x.ndim != 1 or x.dtype.kind not in "iu" or rows == 0:
        return None
    v = np.asarray(x.value)
    return int(v[0]) if np.array_equal(v, np.arange(v[0], v[0] + rows)) else None


def _stacked(e, n, names, ys, rows, steps, flip):
    """A loop's stacked ys as the exprvm node's results: flipped, summed or padded."""
    out = []
    for name, y, summed in zip(names, ys, n.params["summed"]):
        if flip:
            name = _flip_rows(e, name)
        out.append(reduce(e, "ReduceSum", name, [0], False) if summed else _pad_rows(e, name, y, rows, steps))
    return out


@exports("scan")
def _scan(e, n, ins):
    p = n.params
    body, nc, nx, rows, steps = p["body"], p["n_carry"], p["n_x"], p["rows"], p["steps"]
    xs = n.inputs[nc:nc + nx]
    n_in = len(body.inputs)
    if steps is None or nx == 0 or all(_index_range(x, rows) is not None for x in xs):
        return _scan_as_loop(e, n, ins, n_in)
    carries, xs_names, caps = ins[:nc], ins[nc:nc + nx], ins[nc + nx:n_in]
    if steps < rows:    # only the first rows run
        stop = e.const([steps])
        xs_names = [e.add("Slice", [x, e.const([0]), stop, e.const([0])]) for x in xs_names]
    with _Scope(e, f"{body.name}_scan_body") as s:
        for leaf in body.inputs[:nc + nx]:
            s.declare(leaf)
        outs = _emit_body(e, body, [None] * (nc + nx) + list(caps))
    graph = s.graph([(nm, o, o.shape) for nm, o in zip(outs, body.outputs)])
    results = [e.fresh(f"scan_{n.id}_out") for _ in body.outputs]
    ny = len(body.outputs) - nc
    reverse = {"scan_input_directions": [1] * nx} if p["reverse"] else {}
    if p["reverse"] and ny:
        reverse["scan_output_directions"] = [1] * ny
    e.add("Scan", carries + xs_names, results, body=graph, num_scan_inputs=nx, **reverse)
    return results[:nc] + _stacked(e, n, results[nc:], _ys(n), rows, steps, False)


def _ys(n):
    """Stand-ins for the stacked results' shapes: the scan node's result projections' specs."""
    nc = n.params["n_carry"]
    return [_Spec(shape, dt) for shape, dt in n.params["results"][nc:]]


class _Spec:
    """A shape and dtype, as the helpers read them from a node."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.label = "a stacked result"


def _scan_as_loop(e, n, ins, n_in):
    """A scan as ONNX Loop: M = the length, each step's rows gathered by the row it visits."""
    p = n.params
    body, nc, nx, rows, steps, reverse = p["body"], p["n_carry"], p["n_x"], p["rows"], p["steps"], p["reverse"]
    if steps is not None:
        trips = e.const(steps)
    else:
        trips = e.add("Cast", [ins[-1]], to=INT64)
    carries, caps = ins[:nc], ins[nc + nx:n_in]
    with _Scope(e, f"{body.name}_loop_body") as s:
        i = s.declare(None, "iteration")
        go = s.declare(None, "cond")
        for leaf in body.inputs[:nc]:
            s.declare(leaf)
        row = e.add("Sub", [e.add("Sub", [trips, e.const(1)]), i]) if reverse else i
        for x, name, leaf in zip(n.inputs[nc:nc + nx], ins[nc:nc + nx], body.inputs[nc:nc + nx]):
            lo = _index_range(x, rows)
            if lo is None:
                e.names[leaf] = e.add("Gather", [name, row], axis=0)
            else:
                e.names[leaf] = row if lo == 0 else e.add("Add", [row, e.const(lo)])
        outs = _emit_body(e, body, [None] * (nc + nx) + list(caps))
        go_out = e.add("Identity", [go])
    ys = _ys(n)
    graph = s.graph([(go_out, _Spec((), np.bool_), ())] +
                    [(nm, o, o.shape) for nm, o in zip(outs, body.outputs)])
    results = [e.fresh(f"loop_{n.id}_out") for _ in body.outputs]
    e.add("Loop", [trips, ""] + carries, results, body=graph)
    return results[:nc] + _stacked(e, n, results[nc:], ys, rows, steps if steps is not None else trips, reverse)


@exports("while_loop")
def _while(e, n, ins):
    p = n.params
    cond, body, nc, limit = p["cond"], p["body"], p["n_carry"], p["max_iterations"]
    n_cc = len(cond.inputs) - nc
    carries, caps_c, caps_b = ins[:nc], ins[nc:nc + n_cc], ins[nc + n_cc:]
    (pred,) = _emit_body(e, cond, list(carries) + list(caps_c))
    first = _as_bool(e, pred, cond.outputs[0])
    with _Scope(e, f"{body.name}_loop_body") as s:
        s.declare(None, "iteration")
        s.declare(None, "cond")
        for leaf in body.inputs[:nc]:
            s.declare(leaf)
        count = s.declare(None, "iteration")
        outs = _emit_body(e, body, [None] * nc + list(caps_b))
        (pred,) = _emit_body(e, cond, outs[:nc] + list(caps_c))
        go = _as_bool(e, pred, cond.outputs[0])
        count_out = e.add("Add", [count, e.const(1)])
    scalar_int, scalar_bool = _Spec((), np.int64), _Spec((), np.bool_)
    graph = s.graph([(go, scalar_bool, ())] + [(nm, o, o.shape) for nm, o in zip(outs[:nc], body.outputs)]
                    + [(count_out, scalar_int, ())] + [(nm, o, o.shape) for nm, o in zip(outs[nc:], body.outputs[nc:])])
    results = [e.fresh(f"while_{n.id}_out") for _ in range(len(body.outputs) + 1)]
    trips = "" if limit is None else e.const(limit)
    e.add("Loop", [trips, first] + list(carries) + [e.const(0)], results, body=graph)
    stacks = [_pad_rows(e, nm, _Spec(shape, dt), shape[0], results[nc])
              for nm, (shape, dt) in zip(results[nc + 1:], p["results"][nc + 1:])]
    return results[:nc + 1] + stacks


@exports("cond")
def _cond(e, n, ins):
    p = n.params
    branches = []
    for which in ("true", "false"):
        body = p[which]
        with _Scope(e, f"{body.name}_{which}_branch") as s:
            outs = _emit_body(e, body, list(ins[1:]))
        branches.append(s.graph([(nm, o, o.shape) for nm, o in zip(outs, body.outputs)]))
    results = [e.fresh(f"cond_{n.id}_out") for _ in p["results"]]
    e.add("If", [_as_bool(e, ins[0], n.inputs[0])], results, then_branch=branches[0], else_branch=branches[1])
    return results
