"""Python operators and numpy-style methods on Node, installed when exprvm.ops loads.

The core defines Node as plain data; the operators live here, with the ops they
build, so that the core never imports the op library (the frontend extends the
core, never the reverse).
"""
from ..core import OPS, Node, build_node
from ..errors import DTypeError
from . import elementwise, numpy_elementwise, reduce, shape as shape_ops


def install():
    """Give Node its operators: + - * / ** @ %, unary -, abs, comparisons, & | ^ ~ of bool
    nodes, indexing, .T, .reshape, .sum, .mean, .astype and numpy's other ndarray methods."""
    add, sub, mul, div = OPS["add"], OPS["sub"], OPS["mul"], OPS["div"]
    pow_, matmul, neg = OPS["pow"], OPS["matmul"], OPS["neg"]

    # NOTE: straight to build_node (no wrapper frame): node building is the LispMachine's
    # hot path, and each frame between the user and build_node costs a creation-site probe.
    methods = {
        "__add__": lambda self, o: build_node(add, (self, o), {}),
        "__radd__": lambda self, o: build_node(add, (o, self), {}),
        "__sub__": lambda self, o: build_node(sub, (self, o), {}),
        "__rsub__": lambda self, o: build_node(sub, (o, self), {}),
        "__mul__": lambda self, o: build_node(mul, (self, o), {}),
        "__rmul__": lambda self, o: build_node(mul, (o, self), {}),
        "__truediv__": lambda self, o: build_node(div, (self, o), {}),
        "__rtruediv__": lambda self, o: build_node(div, (o, self), {}),
        "__pow__": lambda self, o: build_node(pow_, (self, o), {}),
        "__rpow__": lambda self, o: build_node(pow_, (o, self), {}),
        "__matmul__": lambda self, o: build_node(matmul, (self, o), {}),
        "__rmatmul__": lambda self, o: build_node(matmul, (o, self), {}),
        "__neg__": lambda self: build_node(neg, (self,), {}),
        "__abs__": lambda self: elementwise.abs(self),
        "__lt__": lambda self, o: elementwise.less(self, o),
        "__le__": lambda self, o: elementwise.less_equal(self, o),
        "__gt__": lambda self, o: elementwise.greater(self, o),
        "__ge__": lambda self, o: elementwise.greater_equal(self, o),
        # getitem itself: one frame fewer for the creation-site probe
        "__getitem__": shape_ops.getitem,
        "T": property(lambda self: shape_ops.transpose(self), doc="The transpose (axes reversed), as ``ev.transpose``."),
        "reshape": _reshape,
        "sum": lambda self, axis=None, keepdims=False: reduce.sum(self, axis=axis, keepdims=keepdims),
        "mean": lambda self, axis=None, keepdims=False: reduce.mean(self, axis=axis, keepdims=keepdims),
        "astype": lambda self, dtype: elementwise.astype(self, dtype),
        "__mod__": lambda self, o: numpy_elementwise.remainder(self, o),
        "__rmod__": lambda self, o: numpy_elementwise.remainder(o, self),
        "__and__": lambda self, o: numpy_elementwise.logical_and(self, o),
        "__rand__": lambda self, o: numpy_elementwise.logical_and(o, self),
        "__or__": lambda self, o: numpy_elementwise.logical_or(self, o),
        "__ror__": lambda self, o: numpy_elementwise.logical_or(o, self),
        "__xor__": lambda self, o: numpy_elementwise.logical_xor(self, o),
        "__rxor__": lambda self, o: numpy_elementwise.logical_xor(o, self),
        "__invert__": _invert,
    }
    # numpy's ndarray methods, each the ev function of the same name (self first)
    for name in ("max", "min", "prod", "std", "var", "cumsum", "cumprod", "ravel", "flatten",
                 "squeeze", "swapaxes", "repeat", "clip", "dot", "round", "trace", "diagonal",
                 "argmax", "argmin", "argsort"):
        methods[name] = _method(name)
    methods["transpose"] = _transpose
    methods["take"] = _take
    docs = {"sum": "``ev.sum(node, axis=, keepdims=)``: the sum over the axes (all by default).",
            "mean": "``ev.mean(node, axis=, keepdims=)``: the mean over the axes (all by default).",
            "astype": "``ev.astype(node, dtype)``: the node converted to ``dtype``."}
    for name, fn in methods.items():
        if name in docs:
            fn.__doc__ = docs[name]
        setattr(Node, name, fn)


def _method(name):
    def method(self, *args, **kwargs):
        from .. import ops
        return getattr(ops, name)(self, *args, **kwargs)
    method.__name__ = name
    method.__doc__ = f"ev.{name}(self, ...), as ndarray.{name}."
    return method


def _transpose(self, *axes):
    """``ev.transpose(node, axes)``, as ndarray.transpose: the axes as one tuple, as separate
    ints, or none (reversed)."""
    if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
        axes = axes[0]
    return shape_ops.transpose(self, axes or None)


def _take(self, indices, axis=None):
    """ndarray.take: indices along axis (None: of the flattened node)."""
    from .numpy_shape import ravel
    return shape_ops.take(ravel(self), indices, 0) if axis is None else shape_ops.take(self, indices, axis)


def _invert(self):
    if self.dtype.kind != "b":
        raise DTypeError(f"~ of node {self.label}: bitwise not of {self.dtype.name} is not supported "
                         f"(~ is logical_not of a bool node)")
    return numpy_elementwise.logical_not(self)




def _reshape(self, *shape):
    """``ev.reshape(node, shape)``; the shape as one tuple or as separate ints (``x.reshape(2, 3)``)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return shape_ops.reshape(self, shape)
