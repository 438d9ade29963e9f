"""Errors in an op function's own arguments (an axis, a mode, subscripts), worded as the
shape rules' build-time errors are: the op, the operands, and the user's line.

    with arg_errors("pad", x):
        width = _pad_width(pad_width, ndim_of(x))     # raises ShapeError("negative width")

re-raises any ExprError from the block as the same type, prefixed with the op's name
and followed by the operands and the line that called the op.
"""
from ..core import Node, operands, user_site
from ..errors import ExprError


class arg_errors:
    # NOTE: a class, not contextlib.contextmanager: the creation-site probe skips frames
    # inside exprvm only, and contextlib's own frame would be taken for the user's.
    __slots__ = ("op", "xs")

    def __init__(self, op, *xs):
        self.op, self.xs = op, xs

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is None or not issubclass(kind, ExprError):
            return False
        nodes = [x for x in self.xs if isinstance(x, Node)]
        where = (f"\n  operands: {operands(nodes)}\n  built at {user_site()}" if nodes
                 else f"\n  called at {user_site()}")
        raise kind(f"{self.op}: {e}{where}") from None
