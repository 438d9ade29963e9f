"""How a LispMachine's logger shows values (Gorgonia's WithValueFmt).

value_fmt=None logs no values; a format spec such as ".3f" or "+.2e" formats every
element (numpy's summarising of large arrays kept); a str with braces, "{:.3f}", is
used as str.format for every element; a callable gets the array and returns the text.
"""
import numpy as np

from ..errors import ExprError


def formatter(value_fmt):
    """A function array -> str for value_fmt, or None when no values are logged."""
    if value_fmt is None:
        return None
    if callable(value_fmt):
        return lambda v: str(value_fmt(v))
    if not isinstance(value_fmt, str):
        raise ExprError(f"value_fmt must be None, a format string or a callable, got {value_fmt!r}")
    one = value_fmt.format if "{" in value_fmt else (lambda x: format(x, value_fmt))
    try:
        one(1.5)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ExprError(f"value_fmt {value_fmt!r} cannot format a number: {e}") from None

    def fmt(v):
        v = np.asarray(v)
        if v.ndim == 0:
            return one(v.item())
        return np.array2string(v, formatter={"all": one}, threshold=64, edgeitems=3,
                               max_line_width=1000000).replace("\n", "")
    return fmt
