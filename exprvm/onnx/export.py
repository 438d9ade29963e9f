"""ev.onnx.export: an exprvm graph out as an ONNX model (forward only).

    outputs -> the nodes they need (ancestors) -> every op, inside loop and branch bodies
    too, checked against the export table first -> one or more ONNX nodes per exprvm node
    (export_table's rows; export_control's for loops and branches, whose bodies become ONNX
    subgraphs), parameters and constants as initializers -> onnx.checker.check_model -> the file

Parameters keep their names (and their current values), so a model fine-tuned in exprvm
leaves with the names it came in with. Gradient ops, random ops and anything else
without an ONNX form are refused by name before anything is written.
"""
import os

import numpy as np

from ..core import Node, ancestors
from ..core.body import Body
from ..errors import OnnxError, OnnxUnsupportedError
from . import export_control  # noqa: F401  (registers the rows of loops and branches)
from .checks import MIN_OPSET
from .export_table import EXPORTS
from .proto import ONNX_TYPES, onnx_module

DEFAULT_OPSET = 17


def export(graph, outputs, path, inputs=None, opset=None):
    """Write the part of an exprvm graph that computes ``outputs`` as an ONNX model.

    Parameters
    ----------
    graph : ev.Graph
        The graph the nodes belong to.
    outputs : Node or list of Node
        The values the model returns, in order.
    path : str or os.PathLike or None
        Where to write the model (None: only return it).
    inputs : list of Node, optional
        The model's inputs in order (default: the input leaves the outputs read, in the
        order they were made). Every input leaf the outputs read must be among them.
    opset : int, optional
        The ONNX opset to write (default 17; 13 to the newest the onnx package knows).

    Returns
    -------
    onnx.ModelProto
        The model, checked by onnx.checker.check_model.

    Raises
    ------
    OnnxUnsupportedError
        An op with no ONNX form (a gradient op, a random op, ...), also inside a loop's or
        a branch's body, naming it and the line that built it; nothing is written.

    Notes
    -----
    ``ev.scan`` leaves as an ONNX ``Scan`` (xs and a length known when the graph is built,
    forward or reverse) or ``Loop`` (a length node, no xs, ``ev.fori_loop``'s index);
    ``ev.while_loop`` as ``Loop``; ``ev.cond`` as ``If``. Their bodies are ONNX subgraphs
    that read the nodes they captured (weights, say) by their outer names.
    """
    onnx = onnx_module()
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise OnnxUnsupportedError(f"opset {opset}: exprvm writes opsets {MIN_OPSET} to "
                                   f"{onnx.defs.onnx_opset_version()}", opset=opset)
    outputs = [outputs] if isinstance(outputs, Node) else list(outputs)
    for n in outputs + list(inputs or ()):
        if not isinstance(n, Node) or n.graph is not graph:
            raise OnnxError(f"ev.onnx.export: {n!r} is not a node of graph {graph.name!r}")
    bad = [n.label for n in inputs or () if n.op != "input"]
    if bad:
        raise OnnxError(f"ev.onnx.export: inputs= must be input leaves (parameters leave as initializers): {bad}")
    needed = ancestors(outputs)
    used = [n for n in needed if n.op == "input"]
    inputs = used if inputs is None else list(inputs)
    missing = [n.label for n in used if n not in inputs]
    if missing:
        raise OnnxError(f"ev.onnx.export: the outputs read inputs not among inputs=: {missing}")
    for n, inside in _every_node(needed):
        if not n.is_leaf and n.op not in EXPORTS:
            where = f" in the body {inside.name} (defined at {inside.site})" if inside is not None else ""
            raise OnnxUnsupportedError(f"ev.onnx.export: op {n.op} ({n.label}, made at {n.site}){where} has "
                                       "no ONNX form", op_type=n.op, node=n.label)
        if n.op == "param" and n.value is None:
            raise OnnxError(f"ev.onnx.export: parameter {n.label} has no value")
    e = Emitter(onnx, opset)
    for n in inputs:
        e.graph_inputs.append(e.value_info(e.name(n, n.label), n))
    e.emit(needed)
    outs = []
    for k, n in enumerate(outputs):
        name = e.fresh(f"output_{k}")
        e.add("Identity", [e.names[n]], [name])
        outs.append(e.value_info(name, n))
    read = _read_names(e.nodes)      # NOTE: a constant a Loop's rows replace is read by no node
    g = onnx.helper.make_graph(e.nodes, graph.name or "exprvm", e.graph_inputs, outs,
                               [t for t in e.inits if t.name in read])
    model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="exprvm")
    model.ir_version = min(model.ir_version, 10)   # NOTE: what current onnxruntime wheels read
    onnx.checker.check_model(model)
    if path is not None:
        with open(os.fspath(path), "wb") as f:
            f.write(model.SerializeToString())
    return model


def _read_names(nodes):
    """The names ONNX nodes read, their subgraphs' nodes included."""
    read = set()
    for n in nodes:
        read.update(n.input)
        for a in n.attribute:
            if a.HasField("g"):
                read |= _read_names(a.g.node)
    return read


def _every_node(nodes, inside=None):
    """(node, the body it sits in or None) for nodes and, depth first, their bodies' nodes."""
    for n in nodes:
        yield n, inside
        for b in n.params.values():
            if isinstance(b, Body):
                yield from _every_node(b.order, b)


class Emitter:
    """What export_table's rows write with: fresh names, nodes, constant initializers."""

    def __init__(self, onnx, opset):
        self.onnx, self.opset = onnx, opset
        self.nodes, self.inits, self.graph_inputs = [], [], []
        # NOTE: keyed by the node itself: a body graph numbers its nodes from 0 too
        self.names, self.taken = {}, set()
        self.node = None

    def emit(self, nodes):
        """Write nodes (in topological order) into the graph being written: parameters and
        constants as initializers, op nodes through their export rows."""
        for n in nodes:
            if n.op in ("param", "const"):
                self.initializer(np.asarray(n.value, n.dtype), self.name(n, n.label if n.op == "param" else None))
            elif not n.is_leaf:
                outer, self.node = self.node, n
                self.names[n] = EXPORTS[n.op](self, n, [self.names[i] for i in n.inputs])
                self.node = outer

    def value_info(self, name, n, shape=None):
        """The ValueInfoProto of a tensor named name holding node n's dtype (and shape)."""
        code = ONNX_TYPES.get(n.dtype)
        if code is None:
            raise OnnxUnsupportedError(f"ev.onnx.export: {n.label} has dtype {n.dtype}, which has no ONNX type")
        return self.onnx.helper.make_tensor_value_info(name, code, n.shape if shape is None else shape)

    def fresh(self, hint):
        name, k = hint, 1
        while name in self.taken:
            k += 1
            name = f"{hint}_{k}"
        self.taken.add(name)
        return name

    def name(self, n, hint=None):
        self.names[n] = self.fresh(hint or f"{n.op}_{n.id}")
        return self.names[n]

    def add(self, op_type, inputs, outputs=None, **attrs):
        """Append an ONNX node; returns its output name (or names, when several are asked for)."""
        node = self.node
        hint = f"{node.op}_{node.id}" if node is not None else op_type
        outs = outputs if outputs is not None else [self.fresh(f"{hint}_{op_type}")]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), list(outs),
                                                     name=self.fresh(f"{hint}/{op_type}"), **attrs))
        return outs[0] if len(outs) == 1 else outs

    def initializer(self, array, name):
        # NOTE: np.ascontiguousarray would make a 0-d value 1-d (a scalar carry's shape)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def const(self, value, dtype=np.int64):
        """A constant initializer (shapes, axes, scalars): its name."""
        return self.initializer(np.asarray(value, dtype), self.fresh("const"))

    def like(self, value, node):
        """A scalar constant of node's dtype."""
        return self.const(value, node.dtype)
