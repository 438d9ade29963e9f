"""Owners of leaves: the object standing behind a leaf node in every graph it is used in
(an ev.nn Param behind the node bound to its array in each graph).

A machine that sets a leaf's .grad hands the same gradient to the leaf's owner
(`owner.take_grad(array)`), so a solver given the owners once steps with the gradients
of the latest run, whichever graph and whichever machine ran it.

The registry holds the owner for as long as the node lives; it never keeps a node (or
its graph) alive.
"""
import weakref

_OWNERS = {}        # id(node) -> (weakref to the node, owner)
_ARRAYS = {}        # id(array) -> weakref to the owner whose .value it is


def set_owner(node, owner):
    """Make owner the object behind leaf `node` (it must have take_grad(array))."""
    key = id(node)

    def forget(_ref, key=key, owners=_OWNERS):
        # NOTE: the table bound here: at interpreter exit the module's globals may be
        # gone (None) before the last nodes die and call this
        owners.pop(key, None)

    _OWNERS[key] = (weakref.ref(node, forget), owner)


def owner_of(node):
    """The owner of a leaf node, or None."""
    hit = _OWNERS.get(id(node))
    if hit is None or hit[0]() is not node:
        return None
    return hit[1]


def set_array_owner(array, owner):
    """Record that owner.value is this very array, for as long as owner lives (a solver
    given model.parameters(), a dict of arrays, finds each array's parameter)."""
    key = id(array)
    _ARRAYS[key] = weakref.ref(owner, lambda _ref, key=key, arrays=_ARRAYS: arrays.pop(key, None))


def array_owner(array):
    """The object whose .value is this very array, or None."""
    ref = _ARRAYS.get(id(array))
    owner = None if ref is None else ref()
    return owner if owner is not None and owner.value is array else None
