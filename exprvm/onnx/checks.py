"""Everything ev.onnx.load checks before it builds a node: the opset, every tensor's size
against its bytes and the limit, the graph's inputs and their shapes, that the nodes form
a graph (no cycle, no undefined input, no name produced twice), that every operator,
attribute and output is one exprvm imports, and that every input a row needs at import
time (a Reshape's shape) is known then. The result is a Plan the Builder follows.

A loop's body or a branch (an attribute of kind "g") is planned the same way, as a Plan
of its own inside its node's attributes: it may read the values of its enclosing graphs
by name, so its node is ordered after their producers (those names count as the node's
inputs), and a name defined nowhere in its scope is refused as any undefined input is.
"""
import heapq
from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxError, OnnxUnsupportedError
from .proto import numpy_dtype, onnx_module, read_attribute, read_tensor, shape_count
from . import operators  # noqa: F401  (every handler registered)
from .table import IMPORTS, REQUIRED, static_inputs

MIN_OPSET = 13


@dataclass
class Step:
    """One ONNX node as the Builder will build it."""
    proto: object             # the NodeProto
    row: object               # its ImportRow
    attrs: dict               # attribute values, defaults filled in
    label: str                # how errors name it: the node's name, or op_type #index
    static: bool = False      # every output is known at import time (folded)
    static_inputs: tuple = ()  # input positions that must be known at import time


@dataclass
class Plan:
    opset: int
    initializers: dict                    # name -> numpy array
    inputs: list                          # (name, shape, dtype) of the inputs fed at run time
    bound: dict                           # name -> array: graph inputs bound at import (values=)
    steps: list                           # Steps in topological order
    outputs: list                         # graph output names
    static: set = field(default_factory=set)   # names of values known at import time
    folder: object = None
    max_elements: int = 0
    subgraph: bool = False                # a loop's body or a branch (initializers: constants)
    reads: list = field(default_factory=list)  # names of enclosing graphs' values it reads


def where(op_type, label, opset):
    return f"ONNX {op_type} node {label!r} (opset {opset})"


def plan(model, folder, shapes, max_elements, values=None):
    """Check a parsed model all through and return its Plan (or raise OnnxError)."""
    opset = _opset(model)
    g = model.graph
    if len(g.sparse_initializer):
        raise OnnxUnsupportedError("sparse initializers are not supported")
    inits = {}
    for t in g.initializer:
        if t.name in inits:
            raise OnnxError(f"initializer {t.name!r} is given twice")
        inits[t.name] = read_tensor(t, folder, max_elements)
    inputs = _inputs(g, inits, dict(shapes or {}), max_elements)
    bound = _bind(inputs, dict(values or {}))
    inputs = [i for i in inputs if i[0] not in bound]
    known = set(inits) | set(bound) | {name for name, _, _ in inputs}
    steps = _steps(g, known, opset, folder, max_elements)
    for o in g.output:
        if o.name not in known and not any(o.name in s.proto.output for s in steps):
            raise OnnxError(f"graph output {o.name!r} is not computed by any node")
    p = Plan(opset, inits, inputs, bound, steps, [o.name for o in g.output], folder=folder,
             max_elements=max_elements)
    _propagate_static(p)
    return p


def plan_subgraph(g, outer, opset, folder, limit, scope, what, kw):
    """The Plan of a loop's body or a branch: its inputs by name (the loop gives their
    values), its initializers (constants), its nodes and outputs, and the names of the
    enclosing graphs' values it reads (outer: every name visible there). scope prefixes
    its nodes' labels; what names it in messages."""
    if len(g.sparse_initializer):
        raise OnnxUnsupportedError(f"{what}: sparse initializers are not supported", **kw)
    inits = {}
    for t in g.initializer:
        if t.name in inits:
            raise OnnxError(f"{what}: initializer {t.name!r} is given twice", **kw)
        inits[t.name] = read_tensor(t, folder, limit, f"{what}: tensor {t.name!r}")
    for vi in list(g.input) + list(g.output):
        _tensor_type(vi, f"{what}: value {vi.name!r}", kw)
    names = [vi.name for vi in g.input]
    if len(set(names)) != len(names):
        raise OnnxError(f"{what}: an input name is given twice: {names}", **kw)
    known = set(inits) | set(names)
    steps = _steps(g, known, opset, folder, limit, outer, scope)
    produced = known | {o for s in steps for o in s.proto.output if o} | set(outer)
    for o in g.output:
        if o.name not in produced:
            raise OnnxError(f"{what}: output {o.name!r} is not computed by any node", **kw)
    return Plan(opset, inits, [(n, None, None) for n in names], {}, steps, [o.name for o in g.output],
                folder=folder, max_elements=limit, subgraph=True, reads=free_names(g))


def _tensor_type(vi, what, kw):
    """A subgraph's input or output: a tensor of a type exprvm holds (its type may be left out)."""
    kind = vi.type.WhichOneof("value")
    if kind not in (None, "tensor_type"):
        raise OnnxUnsupportedError(f"{what}: a {kind} is not supported (tensors are)", **kw)
    if kind and vi.type.tensor_type.elem_type:
        try:
            numpy_dtype(vi.type.tensor_type.elem_type, what)
        except OnnxUnsupportedError as e:
            raise OnnxUnsupportedError(str(e), **kw) from None


def _subgraphs(n):
    """The GraphProtos among a node's attributes."""
    out = []
    for a in n.attribute:
        if a.type == 5:
            out.append(a.g)
        out.extend(a.graphs)
    return out


def free_names(g):
    """The names a graph's nodes (and their subgraphs) read but the graph does not define,
    in the order first read: the enclosing graphs' values it uses."""
    defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    defined |= {o for n in g.node for o in n.output}
    out = {}
    for n in g.node:
        for name in list(n.input) + [r for sg in _subgraphs(n) for r in free_names(sg)]:
            if name and name not in defined:
                out[name] = None
    return list(out)


def _opset(model):
    onnx = onnx_module()
    versions = {imp.domain: imp.version for imp in model.opset_import}
    v = versions.get("", versions.get("ai.onnx"))
    if v is None:
        raise OnnxError("the model imports no version of the default ONNX operator set (ai.onnx)")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= v <= newest:
        raise OnnxUnsupportedError(f"opset {v} is not supported: exprvm imports opsets {MIN_OPSET} to {newest} "
                                   "(onnx.version_converter.convert_version upgrades older models)", opset=v)
    return int(v)


def _inputs(g, inits, shapes, limit):
    out = []
    for vi in g.input:
        if vi.name in inits:
            continue     # an initializer listed as an input (older exporters): a parameter
        what = f"graph input {vi.name!r}"
        if vi.type.WhichOneof("value") != "tensor_type":
            kind = vi.type.WhichOneof("value") or "untyped value"
            raise OnnxUnsupportedError(f"{what}: a {kind} is not supported (tensors are)")
        tt = vi.type.tensor_type
        dt = numpy_dtype(tt.elem_type, what)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        given = shapes.pop(vi.name, None)
        if given is not None:
            given = tuple(int(s) for s in given)
            if tt.HasField("shape") and (len(given) != len(dims) or
                                         any(d is not None and d != s for d, s in zip(dims, given))):
                raise OnnxError(f"{what}: the shape given, {given}, does not fit the model's {_dims(tt)}")
            dims = list(given)
        elif not tt.HasField("shape") or None in dims:
            raise OnnxError(f"{what} has shape {_dims(tt)}, not fully known: give it, "
                            f"ev.onnx.load(..., shapes={{{vi.name!r}: (...)}})")
        shape, _ = shape_count(dims, what, limit)
        out.append((vi.name, shape, dt))
    if shapes:
        raise OnnxError(f"shapes= names no graph input of the model: {sorted(shapes)}")
    return out


def _bind(inputs, values):
    """values= checked against the inputs they bind: the same shape and dtype."""
    bound = {}
    for name, shape, dt in inputs:
        if name in values:
            a = np.asarray(values.pop(name))
            if a.shape != shape or a.dtype != dt:
                raise OnnxError(f"values= binds graph input {name!r} to a {a.dtype} array of shape {a.shape}; "
                                f"the model declares {dt} {shape}")
            bound[name] = a
    if values:
        raise OnnxError(f"values= names no graph input of the model: {sorted(values)}")
    return bound


def import_time_inputs(model):
    """The names of the graph inputs whose values a model needs when it is imported (a
    Reshape's shape fed as an input, say): bind them with ev.onnx.load(..., values=)."""
    g = model.graph
    need = set()
    for n in reversed(list(g.node)):
        row = IMPORTS.get(n.op_type)
        if row is None:
            continue
        if row.fold and n.op_type not in ("Shape", "Size") and any(o in need for o in n.output):
            need.update(i for i in n.input if i)
        need.update(n.input[k] for k in static_inputs(row, n) + row.bind if k < len(n.input) and n.input[k])
    inits = {t.name for t in g.initializer}
    return [vi.name for vi in g.input if vi.name in need and vi.name not in inits]


def _dims(tt):
    if not tt.HasField("shape"):
        return "unknown"
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in tt.shape.dim) + ")"


def _steps(g, known, opset, folder, limit, outer=frozenset(), scope=""):
    """The nodes checked and sorted topologically (Kahn's algorithm). outer: the names the
    enclosing graphs define (a subgraph may read them); scope: how labels name the graph."""
    producer = {}
    for k, n in enumerate(g.node):
        for o in n.output:
            if not o:
                continue
            if o in known or o in producer:
                raise OnnxError(f"value {o!r} is produced twice (node {scope}{_label(n, k)!r})")
            producer[o] = k
    waiting, readers = [0] * len(g.node), [[] for _ in g.node]
    for k, n in enumerate(g.node):
        # a subgraph's reads of this graph's values are inputs of its node too
        reads = dict.fromkeys(list(n.input) + [r for sg in _subgraphs(n) for r in free_names(sg)])
        for i in reads:
            if not i or i in known or (i in outer and i not in producer):
                continue
            if i not in producer:
                what = f"input {i!r}" if i in n.input else f"its subgraph reads {i!r}, which"
                raise OnnxError(f"{where(n.op_type, scope + _label(n, k), opset)}: {what} is not defined "
                                "(no graph input, initializer or node output has that name)")
            waiting[k] += 1
            readers[producer[i]].append(k)
    # NOTE: the lowest-numbered ready node first: a model already sorted keeps its order
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for r in readers[k]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) != len(g.node):
        k = next(k for k, w in enumerate(waiting) if w)
        raise OnnxError(f"the graph has a cycle through node {scope}{_label(g.node[k], k)!r} ({g.node[k].op_type})")
    visible = set(known) | set(producer) | set(outer)
    return [_step(g.node[k], k, opset, folder, limit, visible, scope) for k in order]


def _label(n, k):
    return n.name or f"{n.op_type} #{k}"


def _step(n, k, opset, folder, limit, visible=frozenset(), scope=""):
    label = scope + _label(n, k)
    at = where(n.op_type, label, opset)
    kw = dict(op_type=n.op_type, node=label, opset=opset)
    if n.domain not in ("", "ai.onnx"):
        raise OnnxUnsupportedError(f"{at}: operator domain {n.domain!r} is not supported", **kw)
    row = IMPORTS.get(n.op_type)
    if row is None:
        raise OnnxUnsupportedError(f"{at}: operator {n.op_type} is not supported", **kw)
    defs = onnx_module().defs
    try:
        schema = defs.get_schema(n.op_type, opset)
    except Exception:   # NOTE: onnx raises its SchemaError
        raise OnnxError(f"{at}: operator {n.op_type} is not defined at opset {opset}", **kw) from None
    _check_arity(n, schema, defs.OpSchema.FormalParameterOption.Single, at, kw)
    attrs = {}
    for a in n.attribute:
        spec = row.attrs.get(a.name)
        if spec is None:
            raise OnnxUnsupportedError(f"{at}: attribute {a.name!r} is not supported", attribute=a.name, **kw)
        if a.name in attrs:
            raise OnnxError(f"{at}: attribute {a.name!r} is given twice", attribute=a.name, **kw)
        attrs[a.name] = read_attribute(a, spec[0], folder, limit, at)
    for name, (_, default) in row.attrs.items():
        if name not in attrs:
            if default is REQUIRED:
                raise OnnxError(f"{at}: attribute {name!r} is required", attribute=name, **kw)
            attrs[name] = default
    for name, (kind, _) in row.attrs.items():
        if kind == "g":
            attrs[name] = plan_subgraph(attrs[name], visible, opset, folder, limit, f"{label}/{name}/",
                                        f"{at}, attribute {name}", kw)
    bad = row.check(attrs) if row.check else None
    if bad is not None:
        raise OnnxUnsupportedError(f"{at}: attribute {bad[0]}={bad[1]} is not supported",
                                   attribute=bad[0], **kw)
    for i, o in enumerate(n.output):
        if o and i >= row.outputs:
            raise OnnxUnsupportedError(f"{at}: output {i} ({o!r}) is not supported; exprvm computes "
                                       f"the first {row.outputs}", **kw)
    return Step(n, row, attrs, label, static_inputs=static_inputs(row, n))


def _check_arity(n, schema, single, at, kw):
    """As many inputs and outputs as the operator takes, each required one named."""
    for what, names, formal, lo, hi in (("inputs", n.input, schema.inputs, schema.min_input, schema.max_input),
                                        ("outputs", n.output, schema.outputs, schema.min_output,
                                         schema.max_output)):
        if not lo <= len(names) <= hi:
            raise OnnxError(f"{at}: {len(names)} {what}, the operator takes {lo} to {hi}", **kw)
        for i, name in enumerate(names):
            if not name and i < len(formal) and formal[i].option == single:
                raise OnnxError(f"{at}: {what[:-1]} {i} ({formal[i].name}) is required but left empty", **kw)


def _propagate_static(p, outer_static=frozenset(), outer_inits=frozenset()):
    """Mark the values known at import time: integer initializers, constants, shapes, and
    whatever a foldable row computes from known values only. Float initializers are
    parameters (trainable), so what reads them is built as nodes. A subgraph's values
    known at import are its initializers (constants), the enclosing graphs' values known
    then, and what it computes from those only."""
    static = {name for name, a in p.initializers.items() if a.dtype.kind != "f" or p.subgraph}
    static |= set(p.bound) | set(outer_static)
    inits = set(p.initializers) | set(outer_inits)
    for s in p.steps:
        n = s.proto
        for sub in s.attrs.values():
            if isinstance(sub, Plan):
                _propagate_static(sub, static, inits)
        ins = [i for i in n.input if i]
        if n.op_type in ("Shape", "Size") or (s.row.fold and all(i in static for i in ins)):
            s.static = True
            static.update(o for o in n.output if o)
        for pos in s.static_inputs:
            if pos < len(n.input) and n.input[pos] and n.input[pos] not in static and n.input[pos] not in inits:
                raise OnnxUnsupportedError(
                    f"{where(n.op_type, s.label, p.opset)}: input {pos} ({n.input[pos]!r}) must be known "
                    "when the model is imported (a constant, an initializer, or computed from shapes); "
                    "computed at run time, it is not supported", op_type=n.op_type, node=s.label, opset=p.opset)
    p.static = static
