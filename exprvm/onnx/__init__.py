"""ONNX exchange: ev.onnx.load builds an exprvm graph from an ONNX model, ev.onnx.export
writes an exprvm graph as one.

    g, inputs, outputs = ev.onnx.load("model.onnx", shapes={"x": (32, 784)})
    ev.onnx.export(g, [y], "out.onnx", inputs=[x])

In: ONNX models (a path, bytes or an onnx.ModelProto), or an exprvm graph and the nodes
wanted. Out: an ordinary exprvm graph (parameters named after the ONNX initializers, so it
compiles, draws, differentiates and fine-tunes), or an ONNX file. The import rows live in
ops_math, ops_shape, ops_nn, ops_pool and ops_rnn (table.py: the registry, and the
supported-operator table of the docs); the export rows in export_table.

ev.onnx.Backend is ONNX's backend interface (onnx.backend.base) over load and the machines.
The `onnx` package is imported only when one of these functions runs: `import exprvm`
does not need it (pip install 'exprvm[onnx]' installs it and onnxruntime).
"""
from .importer import import_time_inputs, load  # noqa: F401
from .export import export  # noqa: F401
from .operators import operator_table  # noqa: F401

# NOTE: Backend (exprvm.onnx.backend) is public too, but not listed: listing it would import onnx
__all__ = ["export", "import_time_inputs", "load", "operator_table"]


def __getattr__(name):
    # NOTE: ev.onnx.Backend subclasses onnx's own class, so it is imported on first use
    if name == "Backend":
        from .backend import Backend
        return Backend
    raise AttributeError(f"module 'exprvm.onnx' has no attribute {name!r}")


def __dir__():
    # NOTE: dir() and tab completion list the API only (Backend too would import onnx)
    return list(__all__)
