"""The graph core: nodes, graphs, the op record, build-time rewrites and ev.grad.

In: the user's calls that build a graph (leaves through a Graph, op nodes through
exprvm.ops, which registers every op here). Out: plain-data Graphs of Nodes, each
op node pointing at its Op record (numpy impl, shape rule, VJPs, test row), which
the compiler and the machines read.
"""
from .graph import (  # noqa: F401
    DTYPE_TYPES, FLOAT_DTYPES, LEAF_OPS, Graph, Node, ancestors, bound_value, check_value, let, norm_dtype)
from .op import OPS, REWRITES, Op, Row, apply, build_node, defop, lift, operands, stacked  # noqa: F401
from .rules import (  # noqa: F401
    binary_rule, integer_or_binary_rule, broadcast, compare_rule, elementwise_rule, is_basic_index, ndim_of, norm_axis, same_float_dtype,
    shape_of, unary_rule, unbroadcast)
from .site import caller, format_site, user_site  # noqa: F401
from .interop import DEVICE_IMPORTERS, as_array, from_dlpack  # noqa: F401
from .grad import check_cost, depends_on, grad  # noqa: F401
from .owners import array_owner, owner_of, set_array_owner, set_owner  # noqa: F401
from .updates import register_update, updates_of  # noqa: F401
from . import rewrites  # noqa: F401  (registers the build-time rewrites)
