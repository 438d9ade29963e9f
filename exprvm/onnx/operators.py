"""The ONNX operators exprvm reads and writes: every handler module imported (each
registers its rows in table.IMPORTS as it loads), and the tables the docs show, generated
from those rows (so they cannot go stale)."""
from . import control, ops_math, ops_nn, ops_pool, ops_rnn, ops_shape  # noqa: F401  (they register rows)
from .export_table import EXPORTS
from .proto import onnx_module
from .table import IMPORTS


def rows():
    """Every import row, sorted by op_type."""
    return [IMPORTS[k] for k in sorted(IMPORTS)]


def _input_names(op_type, positions):
    formal = onnx_module().defs.get_schema(op_type).inputs
    return [formal[i].name if i < len(formal) else f"input {i}" for i in positions]


def operator_table():
    """The supported ONNX operators as a Markdown table, generated from the import rows
    (the inputs that must be known at import named as ONNX's schemas name them)."""
    lines = ["| ONNX operator | attributes | inputs known at import | not supported |",
             "|---|---|---|---|"]
    for r in rows():
        attrs = ", ".join(sorted(r.attrs)) or "-"
        static = ", ".join(_input_names(r.op_type, r.static)) or "-"
        lines.append(f"| {r.op_type} | {attrs} | {static} | {r.notes or '-'} |")
    return "\n".join(lines) + "\n"


def operator_names():
    """The supported ONNX operators, comma-separated (the README's list)."""
    return ", ".join(r.op_type for r in rows())


def export_names():
    """The exprvm ops ev.onnx.export writes, comma-separated."""
    return ", ".join(f"`{k}`" for k in sorted(EXPORTS))
