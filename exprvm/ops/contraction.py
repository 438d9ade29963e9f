"""Tensor contractions: tensordot and einsum, with numpy's semantics and VJPs that are
contractions again (so grad-of-grad works).

In: float nodes or arrays of one dtype. Out: the contraction.
"""
import string

import numpy as np

from ..core import Row, apply, defop, lift, ndim_of, same_float_dtype, shape_of
from ..errors import GradError, ShapeError, UnsupportedError
from .argcheck import arg_errors

# -- tensordot -------------------------------------------------------------------------------


def _td_axes(axes, na, nb):
    """numpy's axes= (an int N, or a pair of axis lists) as a pair of tuples of axes >= 0."""
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        if not 0 <= n <= min(na, nb):
            raise ShapeError(f"axes={n} needs operands of at least {n} dimensions, "
                             f"got {na}-d and {nb}-d")
        return tuple(range(na - n, na)), tuple(range(n))
    try:
        xa, xb = axes
    except (TypeError, ValueError):
        raise ShapeError(f"axes must be an int or a pair of axis lists, got {axes!r}") from None
    xa = (xa,) if isinstance(xa, (int, np.integer)) else tuple(xa)
    xb = (xb,) if isinstance(xb, (int, np.integer)) else tuple(xb)
    out = []
    for xs, n, who in ((xa, na, "a"), (xb, nb, "b")):
        for x in xs:
            if not -n <= int(x) < n:
                raise ShapeError(f"axis {x} is out of range for the {n}-d operand {who}")
        out.append(tuple(int(x) % n for x in xs))
    return tuple(out)


def _td_rule(a, b, axes):
    dt = same_float_dtype(a, b)
    xa, xb = axes
    if len(xa) != len(xb):
        raise ShapeError(f"{len(xa)} axes of a against {len(xb)} axes of b")
    if len(set(xa)) != len(xa) or len(set(xb)) != len(xb):
        raise ShapeError(f"repeated axis in {axes}")
    for i, j in zip(xa, xb):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"axis {i} of a {a.shape} has length {a.shape[i]}, "
                             f"axis {j} of b {b.shape} has {b.shape[j]}")
    free_a = tuple(s for i, s in enumerate(a.shape) if i not in xa)
    free_b = tuple(s for j, s in enumerate(b.shape) if j not in xb)
    return free_a + free_b, dt


def _td_vjp_a(g, ans, a, b, axes):
    xa, xb = axes
    na, nb = len(a.shape), len(b.shape)
    free_a = [i for i in range(na) if i not in xa]
    free_b = [j for j in range(nb) if j not in xb]
    nfa = len(free_a)
    r = tensordot(g, b, (tuple(range(nfa, nfa + len(free_b))), tuple(free_b)))
    # r's axes: a's free axes, then b's summed axes in b's order, each standing for its a partner
    which = free_a + [xa[xb.index(j)] for j in sorted(xb)]
    return _to_order(r, which)


def _td_vjp_b(g, ans, a, b, axes):
    xa, xb = axes
    na, nb = len(a.shape), len(b.shape)
    free_a = [i for i in range(na) if i not in xa]
    free_b = [j for j in range(nb) if j not in xb]
    r = tensordot(a, g, (tuple(free_a), tuple(range(len(free_a)))))
    which = [xb[xa.index(i)] for i in sorted(xa)] + free_b
    return _to_order(r, which)


def _to_order(r, which):
    """Transpose r, whose axis k stands for axis which[k] of the operand, into operand order."""
    perm = tuple(int(k) for k in np.argsort(which))
    return r if perm == tuple(range(len(perm))) else transpose(r, perm)


def _ref_td(a, b, axes):
    # the definition: multiply along the paired axes and sum them out
    xa, xb = axes
    fa = [i for i in range(a.ndim) if i not in xa]
    fb = [j for j in range(b.ndim) if j not in xb]
    A = np.transpose(a, fa + list(xa))
    B = np.transpose(b, list(xb) + fb)
    k = len(xa)
    prod = A.reshape(A.shape + (1,) * len(fb)) * B.reshape((1,) * len(fa) + B.shape)
    return prod.sum(axis=tuple(range(len(fa), len(fa) + k)))


_tensordot = defop("tensordot", lambda a, b, axes: np.tensordot(a, b, axes), _td_rule,
                   vjp=(_td_vjp_a, _td_vjp_b),
                   row=Row((("f", (3, 4, 5), -1.0, 1.0), ("f", (5, 4, 2), -1.0, 1.0)),
                           {"axes": ((1, 2), (1, 0))}, ref=_ref_td))


def tensordot(a, b, axes=2):
    """numpy.tensordot: sum products over axes (an int N: a's last N against b's first N;
    or a pair of axis lists); the result has a's free axes, then b's."""
    with arg_errors("tensordot", a, b):
        axes = _td_axes(axes, ndim_of(a), ndim_of(b))
    return apply("tensordot", a, b, axes=axes)

# -- einsum -----------------------------------------------------------------------------------


def _parse(subscripts, n):
    """'ij,jk->ik' as ((terms...), out), numpy's implicit form made explicit."""
    if not isinstance(subscripts, str):
        raise ShapeError(f"subscripts must be a string, got {subscripts!r}")
    s = subscripts.replace(" ", "")
    lhs, arrow, out = s.partition("->")
    terms = tuple(lhs.split(","))
    letters = "".join(terms) + out
    if not all(c.isalpha() and c.isascii() for c in letters) or (arrow and out.count("-")):
        raise ShapeError(f"subscripts {subscripts!r} must be ASCII letters, commas and '->'")
    if len(terms) != n:
        raise ShapeError(f"{subscripts!r} has {len(terms)} operand term(s), got {n} operand(s)")
    joined = "".join(terms)
    if not arrow:       # numpy's implicit output: the indices seen once, in alphabetical order
        out = "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    if len(set(out)) != len(out):
        raise ShapeError(f"output subscripts {out!r} repeat an index")
    missing = [c for c in out if c not in joined]
    if missing:
        raise ShapeError(f"output index {missing[0]!r} appears in no operand of {subscripts!r}")
    return terms, out


def _spec(terms, out):
    return ",".join(terms) + "->" + out


def _einsum_rule(*xs, subscripts):
    dt = same_float_dtype(*xs)
    terms, out = _parse(subscripts, len(xs))
    size = {}
    for k, (t, x) in enumerate(zip(terms, xs)):
        if len(t) != x.ndim:
            raise ShapeError(f"term {t!r} names {len(t)} axes, operand {k} is {x.shape}")
        for c, d in zip(t, x.shape):
            if size.setdefault(c, d) != d:
                raise ShapeError(f"index {c!r} has length {size[c]} and {d} in {subscripts!r} "
                                 f"(operands {', '.join(str(y.shape) for y in xs)})")
    return tuple(size[c] for c in out), dt


def _einsum(*xs, subscripts):
    return np.einsum(subscripts, *xs, optimize=len(xs) > 2)


def _einsum_vjp(i, g, ans, *xs, subscripts):
    terms, out = _parse(subscripts, len(xs))
    mine = terms[i]
    if len(set(mine)) != len(mine):
        raise GradError(f"einsum: the gradient of operand {i} of {subscripts!r} is not supported: "
                        f"its subscripts {mine!r} repeat an index (a diagonal)")
    others = [t for k, t in enumerate(terms) if k != i]
    seen = set(out).union(*others)
    kept = "".join(c for c in mine if c in seen)     # the rest were summed inside operand i alone
    r = einsum(_spec((out, *others), kept), g, *[x for k, x in enumerate(xs) if k != i])
    if kept == mine:
        return r
    shape = tuple(xs[i].shape)
    r = r.reshape(tuple(d if c in seen else 1 for c, d in zip(mine, shape)))
    return broadcast_to(r, shape)


def _ref_einsum(a, b, subscripts):
    # 'bij,jk->bki' written out: broadcast, multiply, sum j, reorder
    return (a[:, :, :, None] * b[None, None, :, :]).sum(axis=2).transpose(0, 2, 1)


_einsum_op = defop("einsum", _einsum, _einsum_rule, vjp=(_einsum_vjp,), variadic=True,
                   row=Row((("f", (2, 3, 4), -1.0, 1.0), ("f", (4, 5), -1.0, 1.0)),
                           {"subscripts": "bij,jk->bki"}, ref=_ref_einsum))


def einsum(*operands, **kwargs):
    """numpy.einsum, in the subscripts form (einsum("bij,jk->bki", a, b)) or the sublist
    form (einsum(a, [0, 1, 2], b, [2, 3], [0, 3])); '...' stands for the axes an operand's
    subscripts do not name, broadcast across operands as numpy does. The implicit form
    ('ij,jk') is made explicit. The gradient of each operand is an einsum of the others
    with the output's gradient; an operand whose subscripts repeat an index (a diagonal,
    'ii->i') can be evaluated but not differentiated."""
    arrays = [x for x in operands if not isinstance(x, (str, list, tuple))]
    with arg_errors("einsum", *arrays):
        if kwargs.get("optimize", False) not in (False, True, "greedy", "optimal") or \
                set(kwargs) - {"optimize"}:
            raise UnsupportedError(f"arguments {sorted(set(kwargs) - {'optimize'})} are not supported")
        subscripts, xs = _subscripts(operands)
        subscripts, xs = _ellipsis(subscripts, [lift(x) for x in xs])
        terms, out = _parse(subscripts, len(xs))
    return apply("einsum", *xs, subscripts=_spec(terms, out))


_LETTERS = string.ascii_letters


def _subscripts(operands):
    """(subscripts, arrays) of either einsum form; the sublist form's ints (0..51) become
    letters and Ellipsis '...'."""
    if operands and isinstance(operands[0], str):
        return operands[0], list(operands[1:])
    xs, terms = list(operands[0::2]), list(operands[1::2])
    out = None
    if len(operands) % 2:       # a trailing output sublist
        out = operands[-1]
        xs = xs[:-1]

    def word(sub):
        if not isinstance(sub, (list, tuple)):
            raise ShapeError(f"sublist form: expected a list of axis numbers, got {sub!r}")
        parts = []
        for i in sub:
            if i is Ellipsis:
                parts.append("...")
            elif isinstance(i, (int, np.integer)) and 0 <= i < len(_LETTERS):
                parts.append(_LETTERS[int(i)])
            else:
                raise ShapeError(f"sublist form: axis labels are ints in [0, 52) or Ellipsis, got {i!r}")
        return "".join(parts)
    spec = ",".join(word(t) for t in terms)
    return (spec if out is None else spec + "->" + word(out)), xs


def _ellipsis(subscripts, xs):
    """Subscripts with every '...' written out as letters no term uses, and the operands
    whose '...' axes are shorter than the others' broadcast to them (numpy broadcasts them)."""
    if not isinstance(subscripts, str) or "." not in subscripts:
        return subscripts, xs
    s = subscripts.replace(" ", "")
    lhs, arrow, out = s.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise ShapeError(f"{subscripts!r} has {len(terms)} operand term(s), got {len(xs)} operand(s)")
    if any(t.count("...") > 1 or t.replace("...", "").count(".") for t in terms + [out]):
        raise ShapeError(f"each term may hold one '...': {subscripts!r}")
    shapes = [shape_of(x) for x in xs]
    spans = []
    for t, shp in zip(terms, shapes):
        k = len(shp) - len(t.replace("...", "")) if "..." in t else 0
        if k < 0:
            raise ShapeError(f"term {t!r} names more axes than operand {shp} has")
        spans.append(shp[t.index("..."):t.index("...") + k] if "..." in t else ())
    try:
        wide = tuple(np.broadcast_shapes(*spans))
    except ValueError:
        raise ShapeError(f"the '...' axes {' and '.join(map(str, spans))} do not broadcast") from None
    free = [c for c in _LETTERS if c not in s]
    ell = "".join(free[:len(wide)])
    new_terms, new_xs = [], []
    for t, x, shp, span in zip(terms, xs, shapes, spans):
        if "..." in t and span != wide:
            at = t.index("...")
            x = broadcast_to(reshape(x, shp[:at] + (1,) * (len(wide) - len(span)) + shp[at:]),
                             shp[:at] + wide + shp[at + len(span):])
        new_terms.append(t.replace("...", ell))
        new_xs.append(x)
    if arrow:
        out = out.replace("...", ell)
    else:       # numpy's implicit output: the '...' axes, then the indices seen once, sorted
        named = "".join(t for t in lhs.replace("...", "").split(","))
        out = ell + "".join(sorted(c for c in set(named) if named.count(c) == 1))
    return ",".join(new_terms) + "->" + out, new_xs


from .shape import broadcast_to, reshape, transpose  # noqa: E402
