"""Typed errors. Every exception exprvm raises on purpose subclasses ExprError."""


class ExprError(Exception):
    """Base class of every error exprvm raises for bad user input or state."""


class ShapeError(ExprError, ValueError):
    """Operand shapes do not fit the op (raised when the node is built)."""


class DTypeError(ExprError, TypeError):
    """Operand dtypes do not fit the op, e.g. float32 mixed with float64."""


class GradError(ExprError):
    """ev.grad was asked for something it cannot differentiate."""


class GradCheckError(ExprError):
    """Finite differences disagree with the computed gradient."""


class FeedError(ExprError):
    """A run was fed a wrong value, or an input was left unbound."""


class NumericError(ExprError, FloatingPointError):
    """A NaN or Inf appeared under nan_watch / inf_watch."""


class NonFiniteLossError(NumericError):
    """A training step's loss was NaN or Inf (ev.train.Trainer stops there, before the
    optimizer steps); ``.step``, ``.epoch`` (counted from 1) and ``.loss`` say where."""

    def __init__(self, message, step=None, epoch=None, loss=None):
        super().__init__(message)
        self.step, self.epoch, self.loss = step, epoch, loss


class CompileError(ExprError):
    """The graph could not be compiled into a Program, or a Program is unsound."""


class KernelError(ExprError):
    """A compiled kernel was called with input it cannot take, or failed."""


class BackendError(ExprError):
    """A backend (c, cuda) was asked for but is not available."""


class CheckpointError(ExprError):
    """A checkpoint file is corrupt or does not match the parameters."""


class IndexRangeError(ExprError, IndexError):
    """An index (take, one_hot, cross_entropy targets) is outside the axis it indexes."""


class RunError(ExprError, RuntimeError):
    """An op failed while a machine ran it (the message names the node and its line)."""


class NoValueError(ExprError):
    """A node's value was read (float(node), np.asarray(node), node.item()) before a
    machine ran it."""


class UnsupportedError(ExprError, TypeError):
    """A numpy function, ufunc method or argument exprvm has no op for, or a Python
    protocol that does not apply to a node (iterating a 0-d node, float() of many values)."""


class UsageError(ExprError, TypeError):
    """An argument of the wrong kind: a node where a graph is expected, an array where a
    parameter is (the message says what to pass instead)."""


class TraceError(ExprError, TypeError):
    """Python needed a concrete value of a node while a graph was being built (an `if` or a
    `while` on a traced value): build the branch or loop as an op instead (ev.where, ev.cond,
    ev.while_loop, ev.scan)."""


class OnnxError(ExprError, ValueError):
    """An ONNX model was refused: a corrupt or truncated file, a tensor whose declared size
    does not fit its bytes or the size limit, external data outside the model's folder, a
    graph with a cycle or an undefined input, or a node whose operands do not fit it.
    Raised before anything large is allocated. `.op_type`, `.node` and `.opset` name the
    ONNX node where there is one."""

    def __init__(self, message, op_type=None, node=None, opset=None, attribute=None):
        super().__init__(message)
        self.op_type, self.node, self.opset, self.attribute = op_type, node, opset, attribute


class OnnxUnsupportedError(OnnxError, NotImplementedError):
    """An ONNX operator, attribute value, input or output exprvm cannot import (naming it,
    the node and the opset), or an exprvm op with no ONNX form on export."""


# every error class above (a new one is public by being defined here)
__all__ = sorted(n for n, v in list(globals().items()) if isinstance(v, type) and issubclass(v, ExprError))
