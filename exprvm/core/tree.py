"""Nested structures of values (a node, or tuples, lists and dicts of them, or None), as
loop carries and outputs are given: flattened to a list of leaves and rebuilt.

    leaves, tree = flatten({"h": h, "c": c})     # [c, h], and how to rebuild the dict
    unflatten(tree, [c2, h2])                    # {"h": h2, "c": c2}

Dict keys are visited in sorted order (so two dicts with the same keys flatten alike).
"""
from ..errors import ExprError


class Tree:
    """The shape of a nested structure: "leaf", "none", or a container kind with its
    children's Trees (and a dict's keys)."""

    __slots__ = ("kind", "children", "keys")

    def __init__(self, kind, children=(), keys=()):
        self.kind, self.children, self.keys = kind, tuple(children), tuple(keys)

    def __eq__(self, other):
        return (type(other) is Tree and self.kind == other.kind and self.keys == other.keys
                and self.children == other.children)

    def __hash__(self):
        return hash((self.kind, self.keys, self.children))

    def __repr__(self):
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children)) + "}"
        inner = ", ".join(repr(c) for c in self.children)
        return f"({inner},)" if self.kind == "tuple" and len(self.children) == 1 else \
            (f"({inner})" if self.kind == "tuple" else f"[{inner}]")

    @property
    def size(self):
        """How many leaves."""
        if self.kind == "leaf":
            return 1
        return sum(c.size for c in self.children)


def flatten(value):
    """(leaves, Tree) of a nested structure of tuples, lists, dicts and None; anything else
    is a leaf."""
    leaves = []
    return leaves, _flatten(value, leaves)


def _flatten(value, leaves):
    if value is None:
        return Tree("none")
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return Tree("tuple", [_flatten(v, leaves) for v in value])
    if isinstance(value, list):
        return Tree("list", [_flatten(v, leaves) for v in value])
    if isinstance(value, dict):
        try:
            keys = sorted(value)
        except TypeError:
            raise ExprError(f"dict keys of a loop carry must be sortable, got {list(value)!r}") from None
        return Tree("dict", [_flatten(value[k], leaves) for k in keys], keys)
    leaves.append(value)
    return Tree("leaf")


def unflatten(tree, leaves):
    """The structure `tree` describes, with `leaves` in flatten's order."""
    it = iter(leaves)
    out = _unflatten(tree, it)
    rest = list(it)
    if rest:
        raise ExprError(f"{len(rest)} values more than the structure {tree!r} holds")
    return out


def _unflatten(tree, it):
    if tree.kind == "leaf":
        return next(it)
    if tree.kind == "none":
        return None
    kids = [_unflatten(c, it) for c in tree.children]
    if tree.kind == "tuple":
        return tuple(kids)
    if tree.kind == "list":
        return kids
    return dict(zip(tree.keys, kids))
