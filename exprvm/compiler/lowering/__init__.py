"""Lowering: how each op runs on the tape, as one table of rows keyed by (op, backend).

The rows live by op family, numpy, C and CUDA next to each other: elementwise.py,
reduce.py, neural.py, shape.py, linalg.py, internal.py, conv.py; fused.py runs the
generated kernels of fused groups (scalar.py: each elementwise op's scalar C formula);
cuda.py holds the device rows. table.py is the table itself and the lookup (see there for the fallbacks).
Where does softmax run on C? `grep -rn 'lowers("softmax"' exprvm/compiler/lowering`.
"""
from .table import ALL, ROWS, Lowered, Request, fake_array, generic, has_row, lower, lowers  # noqa: F401
from . import elementwise, reduce, neural, shape, linalg, internal, conv, fused, cuda, control  # noqa: F401  (rows)
from .shape import check_index  # noqa: F401
