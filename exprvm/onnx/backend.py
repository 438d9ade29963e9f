"""ONNX's backend interface (onnx.backend.base) over ev.onnx.load and exprvm's machines, so
ONNX's own conformance cases (onnx.backend.test) and tools written against that
interface run on exprvm:

    from exprvm.onnx.backend import Backend        # also ev.onnx.Backend
    rep = Backend.prepare(model, machine="tape")   # or "lisp"; TapeMachine options as keywords
    y, = rep.run([x])

A prepared model builds one graph, and one compiled machine, per combination of fed
shapes (and of the values of inputs it needs at import, such as a Reshape's target shape
fed as an input), and reuses it for later runs with the same.
"""
import numpy as np
import onnx
import onnx.backend.base as base

from ..errors import ExprError
from ..machines import LispMachine, TapeMachine
from .importer import import_time_inputs, load
from ..core import as_array
from .proto import MAX_ELEMENTS, ONNX_TYPES, parse_model, read_tensor

MACHINES = ("tape", "lisp")


def run_machine(m, feeds):
    """Run a machine once: the outputs' values, arrays the caller owns."""
    return [np.asarray(v) for v in m.run(feeds)]


class BackendRep(base.BackendRep):
    """A prepared model: run(inputs) -> the outputs, as ONNX's runner expects."""

    def __init__(self, model, machine="tape", **options):
        if machine not in MACHINES:
            raise ExprError(f"machine must be one of {MACHINES}, got {machine!r}")
        self.model, _ = parse_model(model)
        self.machine, self.options = machine, options
        inits = {t.name for t in self.model.graph.initializer}
        self.names = [vi.name for vi in self.model.graph.input if vi.name not in inits]
        self.outputs = [o.name for o in self.model.graph.output]
        self.bind = set(import_time_inputs(self.model))
        self._built = {}

    def run(self, inputs, **kwargs):
        """The outputs for inputs (arrays, or onnx TensorProtos; a list in the graph's order
        or a dict by name), as a namedtuple by output name."""
        if isinstance(inputs, dict):
            arrays = [_array(inputs[n]) for n in self.names]
        else:
            arrays = [_array(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        named = dict(zip(self.names, arrays))
        key = (tuple((a.shape, a.dtype.str) for a in arrays),
               tuple(named[n].tobytes() for n in self.names if n in self.bind))
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = self._build(named)
        m, ins, outs = built
        feeds = {node: named[node.name] for node in ins}
        if self.machine == "lisp":
            # NOTE: a LispMachine walks its graph on every run; a new one per run is the
            # usual way to drive it, and the replay cache compiles a repeated structure
            m = LispMachine(m, outputs=outs)
        values = run_machine(m, feeds)
        return base.namedtupledict("Outputs", self.outputs)(*values)

    def _build(self, named):
        shapes = {n: a.shape for n, a in named.items() if n not in self.bind}
        values = {n: named[n] for n in self.bind}
        g, ins, outs = load(self.model, shapes=shapes, values=values)
        if self.machine == "lisp":
            return g, ins, outs
        return TapeMachine(g, outputs=outs, **self.options), ins, outs


def _array(value):
    if isinstance(value, onnx.TensorProto):
        return read_tensor(value, None, MAX_ELEMENTS, f"input tensor {value.name!r}")
    return as_array(value)


class Backend(base.Backend):
    """exprvm as an ONNX backend (CPU; CUDA where ev.cuda is available)."""

    @classmethod
    def prepare(cls, model, device="CPU", machine="tape", **options):
        if not cls.supports_device(device):
            raise ExprError(f"device {device!r} is not available to exprvm")
        if device.startswith("CUDA") and machine == "tape":
            options.setdefault("device", "cuda")
        return BackendRep(model, machine, **options)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        arrays = [np.asarray(a) for a in inputs]
        vis = [onnx.helper.make_tensor_value_info(name, ONNX_TYPES[a.dtype], a.shape)
               for name, a in zip(node.input, arrays) if name]
        outs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
        graph = onnx.helper.make_graph([node], "node", vis, outs)
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return cls.prepare(model, device, **kwargs).run([a for name, a in zip(node.input, arrays) if name])

    @classmethod
    def supports_device(cls, device):
        if device.startswith("CPU"):
            return True
        if device.startswith("CUDA"):
            from .. import cuda
            return cuda.is_available()
        return False
