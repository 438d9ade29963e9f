"""ev.onnx.load: an ONNX model in, an ordinary exprvm graph out.

    model bytes -> proto.parse_model -> checks.plan (everything checked, nothing built)
                -> Builder: one import row per node, in topological order -> (graph, inputs, outputs)

Values flow between rows as numpy arrays (known at import time: integer initializers,
constants, shapes and what is computed from them only) or as nodes (graph inputs,
parameters and what reads them). Float initializers become parameters named after their
tensors, so an imported model can be differentiated and fine-tuned. A loop's body or a
branch is built by a Builder of its own (Builder.subgraph) whose names fall back to the
enclosing Builder's, inside the function ev.scan / ev.while_loop / ev.cond traces.
"""
import numpy as np

from ..core import Graph, Node
from ..errors import DTypeError, ExprError, OnnxError, OnnxUnsupportedError
from . import checks
from .proto import MAX_ELEMENTS, parse_model


def load(source, graph=None, *, shapes=None, values=None, unroll=False, max_elements=MAX_ELEMENTS):
    """Build an exprvm graph from an ONNX model.

    Parameters
    ----------
    source : str, os.PathLike, bytes or onnx.ModelProto
        The model: a file (external data is read from its folder only), its bytes, or
        a parsed model. A model file is untrusted input: see Raises.
    graph : ev.Graph, optional
        The graph to build into (default: a new one named after the ONNX graph).
    shapes : dict, optional
        ``{input name: shape}`` for graph inputs whose shape the model leaves symbolic
        (a batch dimension): the graph is built for that shape (one graph per shape).
    values : dict, optional
        ``{input name: array}``: graph inputs bound at import, as constants (a shape or
        sequence lengths the model takes as inputs; ev.onnx.import_time_inputs(model)
        names those it needs). They are not among the returned inputs.
    unroll : bool
        LSTM, GRU and RNN as one ev.scan loop each (False, the default), or unrolled
        into one set of nodes per step (True). ONNX Scan, Loop and If are always loops
        and branches (ev.scan, ev.fori_loop, ev.while_loop, ev.cond).
    max_elements : int
        The most elements any one tensor or value may have (default 2**31).

    Returns
    -------
    (graph, inputs, outputs)
        The graph, its input nodes (fed at run time) and its output nodes, both in the
        ONNX graph's order. Initializers are parameters (float) or constants (integers).

    Raises
    ------
    OnnxUnsupportedError
        An operator, attribute value, input or output exprvm does not import, or an
        opset outside 13 to the newest the onnx package knows; the message names the
        operator, the node and the opset. Raised before any node is built.
    OnnxError
        A corrupt or truncated file, a tensor whose declared size exceeds its bytes or
        max_elements, external data outside the model's folder, a cycle, an undefined
        input, or operands that do not fit their operator.

    Examples
    --------
    >>> from onnx import TensorProto, helper
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
    ...                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("N", 3))],
    ...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ("N", 3))])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    >>> g, (x,), (y,) = ev.onnx.load(model, shapes={"x": (2, 3)})     # the batch N: 2
    >>> m = ev.TapeMachine(g, outputs=[y])
    >>> m.run({x: np.array([[-1.0, 0.0, 2.0], [3.0, -4.0, 5.0]], np.float32)})
    [array([[0., 0., 2.],
           [3., 0., 5.]], dtype=float32)]
    """
    model, folder = parse_model(source)
    p = checks.plan(model, folder, shapes, int(max_elements), values)
    g = graph if graph is not None else Graph(model.graph.name or "onnx")
    return Builder(g, p, unroll=bool(unroll)).build()


def import_time_inputs(source):
    """The names of the graph inputs a model needs the values of when it is imported
    (a Reshape's target shape fed as an input, say), in the graph's order: bind them
    with ev.onnx.load(..., values={name: array}). Most models need none."""
    model, _ = parse_model(source)
    return checks.import_time_inputs(model)


class Builder:
    """Builds a Plan's nodes into a graph; the import rows' handlers call its helpers."""

    def __init__(self, g, plan, unroll=False, parent=None):
        self.g, self.plan, self.opset, self.unroll = g, plan, plan.opset, unroll
        self.parent = parent      # the enclosing graph's Builder, for a subgraph's
        self.values = {}
        self.step = None

    def subgraph(self, plan, graph, bound):
        """Build a subgraph's Plan into graph (a loop's or a branch's body graph, or this
        one) with its inputs bound ({name: value}); the values of its outputs, arrays
        known at import made nodes of graph (a body's results must be its nodes)."""
        sub = Builder(graph, plan, self.unroll, parent=self)
        sub.values.update(bound)
        for step in plan.steps:
            sub.step = step
            sub._build(step)
        outs = [sub.value(name) for name in plan.outputs]
        return [v if isinstance(v, Node) or graph is self.g else sub.node(v) for v in outs]

    def value(self, name):
        """The value of a name visible here: this graph's, or an enclosing graph's."""
        return self._value(name)

    # -- helpers for the handlers ---------------------------------------------------------
    def node(self, v):
        """A value as a node (an array known at import time becomes a constant)."""
        return v if isinstance(v, Node) else self.g.constant(np.asarray(v))

    def refuse(self, what, attribute=None):
        """OnnxUnsupportedError for something the node being built asks for."""
        s = self.step
        raise OnnxUnsupportedError(f"{self.where()}: {what} is not supported", op_type=s.proto.op_type,
                                   node=s.label, opset=self.opset, attribute=attribute)

    def fail(self, what):
        """OnnxError: the node's operands or attributes do not fit it."""
        s = self.step
        raise OnnxError(f"{self.where()}: {what}", op_type=s.proto.op_type, node=s.label, opset=self.opset)

    def limit(self, shape, what="its result"):
        """Refuse a value of shape before it is made when it has too many elements."""
        count = 1
        for d in shape:
            if d < 0:
                self.fail(f"{what} would have a negative dimension: {tuple(shape)}")
            count *= int(d)
        if count > self.plan.max_elements:
            self.fail(f"{what} would have shape {tuple(shape)}, {count} elements, over the limit of "
                      f"{self.plan.max_elements} (ev.onnx.load(..., max_elements=) raises it)")
        return tuple(int(d) for d in shape)

    def where(self):
        s = self.step
        return checks.where(s.proto.op_type, s.label, self.opset)

    # -- building -----------------------------------------------------------------------
    def build(self):
        g, p = self.g, self.plan
        inputs = []
        for name, shape, dt in p.inputs:
            self.values[name] = node = g.tensor(name, shape, dt)
            inputs.append(node)
        for step in p.steps:
            self.step = step
            self._build(step)
        outputs = []
        for name in p.outputs:
            v = self._value(name)
            outputs.append(v if isinstance(v, Node) else g.constant(v, name=name))
        return g, inputs, outputs

    def _value(self, name):
        v = self.values.get(name)
        if v is None and name in self.plan.bound:
            v = self.values[name] = self.plan.bound[name]
        elif v is None and name not in self.plan.initializers and self.parent is not None:
            v = self.parent.value(name)
        elif v is None:
            a = self.plan.initializers[name]
            if a.dtype.kind == "f" and not self.plan.subgraph:    # a parameter, named after its tensor
                v = self.g.tensor(name, a.shape, a.dtype, value=np.array(a))
            else:
                v = a
            self.values[name] = v
        return v

    def _build(self, step):
        n, row = step.proto, step.row
        ins = []
        for pos, name in enumerate(n.input):
            if not name:
                ins.append(None)
            elif pos in step.static_inputs:
                v = self._value(name)
                ins.append(np.asarray(v.value) if isinstance(v, Node) else v)
            else:
                ins.append(self._value(name))
        if not step.static and ins and all(v is None or not isinstance(v, Node) for v in ins):
            # NOTE: built as nodes over constants (a convolution of constants is not
            # evaluated while loading; the compiler folds it)
            ins = [v if v is None or pos in step.static_inputs else self.node(v) for pos, v in enumerate(ins)]
        outs = self._call(row, ins, step.attrs)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        for name, v in zip(n.output, outs):
            if not name:
                continue
            if v is None:
                self.refuse(f"output {name!r}")
            if step.static and isinstance(v, Node):
                v = v.value if v.op == "const" else self.fail("a value known at import time became a node")
            elif not isinstance(v, Node):
                v = np.asarray(v)
            self.limit(v.shape, f"output {name!r}")
            self.values[name] = v
        if len([o for o in n.output if o]) > len(outs):
            self.refuse(f"output {len(outs)}")

    def _call(self, row, ins, at):
        try:
            return row.fn(self, ins, at)
        except OnnxError:
            raise
        except DTypeError as e:
            self.refuse(f"its operand types ({e})")
        except ExprError as e:
            self.fail(str(e))
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError) as e:
            # NOTE: a corrupt model reaches here (an attribute of the wrong length, say)
            self.fail(f"malformed node ({type(e).__name__}: {e})")
