"""The import table: one row per ONNX operator exprvm reads (operators.py holds them all,
and the supported-operator table the docs show, generated from these rows).

A row holds the handler, which builds the operator from exprvm ops, and what the loader
checks before it builds anything: the attributes it knows (kind and default), the inputs
that must be known when the graph is built (a Reshape's shape), how many outputs it
computes, and a check of attribute values it cannot honour. Handlers are registered by
ops_math, ops_shape, ops_nn, ops_pool, ops_rnn and control (Scan, Loop, If, whose
subgraph attributes, kind "g", arrive planned as checks.Plan):

    @imports("Gemm", attrs={"alpha": ("f", 1.0), "transA": ("i", 0), ...})
    def gemm(b, ins, at):               # b: the Builder; ins: values (arrays or nodes)
        ...                             # at: the attributes, defaults filled in
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

REQUIRED = object()      # an attribute default: the attribute must be given
IMPORTS = {}             # ONNX op_type -> ImportRow


@dataclass(frozen=True)
class ImportRow:
    op_type: str
    fn: Callable                          # fn(b, ins, at) -> a value or a tuple of values
    attrs: dict = field(default_factory=dict)   # name -> (kind, default); kinds in proto.KINDS
    static: tuple = ()                    # input positions known when the graph is built
    outputs: int = 1                      # outputs computed (a node asking for more is refused)
    fold: bool = True                     # all inputs known at import: evaluate it then
    check: Optional[Callable] = None      # check(at) -> None, or (attribute, why) refused
    notes: str = ""                       # what the docs table says is not supported
    static_if: Optional[Callable] = None  # static_if(NodeProto) -> more positions known at import
    bind: tuple = ()                      # inputs import_time_inputs names, read at run time otherwise


def imports(op_types, attrs=None, static=(), outputs=1, fold=True, check=None, notes="", static_if=None,
            bind=()):
    """Register a handler for one ONNX op_type or several (a tuple of names)."""
    names = (op_types,) if isinstance(op_types, str) else tuple(op_types)

    def register(fn):
        for name in names:
            IMPORTS[name] = ImportRow(name, fn, dict(attrs or {}), tuple(static), outputs, fold, check, notes,
                                      static_if, tuple(bind))
        return fn
    return register


def static_inputs(row, node):
    """The input positions of an ONNX node that must be known when the graph is built."""
    extra = tuple(row.static_if(node)) if row.static_if is not None else ()
    return tuple(row.static) + tuple(p for p in extra if p not in row.static)


def one_of(attribute, allowed):
    """A row check: the attribute's value must be one of allowed."""
    def check(at):
        if at[attribute] not in allowed:
            return attribute, f"{at[attribute]!r} (supported: {', '.join(map(repr, allowed))})"
        return None
    return check


def all_of(*checks):
    def check(at):
        for c in checks:
            bad = c(at)
            if bad is not None:
                return bad
        return None
    return check
