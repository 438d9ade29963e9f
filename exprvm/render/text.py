"""Label text for drawings: escaping for graphviz and short forms of arrays.

Every string that reaches graphviz goes through label() or plain(), never
into DOT by hand: graphviz.escape doubles backslashes (so a name like `a\\n`
stays literal instead of becoming a line break), nohtml stops a name like
`<b>` from being read as an HTML-like label, & becomes &amp; (dot decodes
entities); quotes are escaped by graphviz when it writes the attribute.
"""
import graphviz
import numpy as np

SMALL = 6          # arrays up to this many elements are shown in full
HEAD = 3           # elements shown before the ellipsis of a large array


def plain(text):
    """One escaped string; line breaks inside it become DOT line breaks."""
    return label(str(text).splitlines() or [""])


def label(lines):
    """Join lines into one escaped, centred, multi-line label."""
    parts = []
    for line in lines:
        parts.extend(str(line).splitlines() or [""])
    # NOTE: "\\n" here is DOT's line-break escape; the lines themselves were escaped
    # first so a backslash in a user's name can never form one. dot also decodes
    # entities such as &amp; in any string, so a literal & is written as &amp;.
    return graphviz.nohtml("\\n".join(graphviz.escape(p.replace("&", "&amp;")) for p in parts))


def number(x):
    """A scalar to 4 significant digits (ints and bools in full)."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.4g}"
    return str(x)


def _elements(a):
    return np.array2string(a, separator=" ", max_line_width=10 ** 6, threshold=10 ** 6,
                           formatter={"all": number})


def _range(a):
    """min/max of the finite values, plus a count of NaN / Inf (what one looks for when debugging)."""
    if a.dtype.kind == "b":
        return f"{int(np.count_nonzero(a))} true"
    if a.dtype.kind not in "iuf":
        return ""
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a.ravel()
    out = f"min {number(finite.min())} max {number(finite.max())}" if finite.size else ""
    if a.dtype.kind == "f":
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        out += "".join(f" {k} {name}" for k, name in ((nan, "NaN"), (inf, "Inf")) if k)
    return out.strip()


def abbrev(value):
    """A short form of an array: scalars in full, small arrays element by element,
    large ones by their first elements and range."""
    if not isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        # NOTE: a device array is named, not copied to the host just to be drawn.
        return f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
    a = np.asarray(value)
    if a.ndim == 0:
        return number(a[()])
    if a.size <= SMALL:
        return _elements(a)
    head = " ".join(number(x) for x in a.ravel()[:HEAD])
    return f"[{head} …] {_range(a)}".rstrip()
