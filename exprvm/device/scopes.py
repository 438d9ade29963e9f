"""tidy() scopes: deterministic freeing of the DeviceArrays a block creates (arrays.py
registers every new array with the innermost scope; exprvm.cuda re-exports tidy and keep).

tidy semantics (as deeplearn.js's): every DeviceArray created while a scope
is open belongs to the innermost scope and is freed when it closes, unless it
was kept (``scope.keep(a)``, ``cuda.keep(a)`` or ``tidy.keep(a)``).  A kept
array passes to the enclosing scope, if any, which frees it in turn unless it
is kept there too.  ``tidy(fn, *args)`` runs fn in a scope and keeps what it
returns (a DeviceArray, or DeviceArrays in a tuple, list or dict).
"""
import threading

_local = threading.local()


def _scopes():
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


class _Scope:
    def __init__(self):
        self._arrays = []
        self._kept = set()

    def __enter__(self):
        _scopes().append(self)
        return self

    def track(self, arr):
        self._arrays.append(arr)

    def keep(self, *arrays):
        """Exempt arrays from this scope's freeing; returns its argument."""
        for a in arrays:
            self._kept.add(id(a))
        return arrays[0] if len(arrays) == 1 else arrays

    def __exit__(self, *exc):
        stack = _scopes()
        stack.remove(self)
        parent = stack[-1] if stack else None
        for a in self._arrays:
            if id(a) in self._kept:
                if parent is not None:
                    parent.track(a)
            else:
                a.free()
        self._arrays.clear()
        return False


def keep(*arrays):
    """Keep arrays out of the innermost tidy scope's freeing (no-op outside one)."""
    stack = _scopes()
    if stack:
        return stack[-1].keep(*arrays)
    return arrays[0] if len(arrays) == 1 else arrays


class Scoped:
    """What a tidy scope frees: DeviceArray derives from it (arrays.py imports this module,
    never the reverse)."""
    __slots__ = ()


def _device_arrays(value):
    if isinstance(value, Scoped):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _device_arrays(v)]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _device_arrays(v)]
    return []


def tidy(fn=None, *args, **kwargs):
    """A scope that frees the DeviceArrays created in it (see the module doc).

    ``with tidy() as scope:`` or ``tidy(fn, *args)``, which keeps fn's result.
    """
    if fn is None:
        return _Scope()
    with _Scope() as scope:
        result = fn(*args, **kwargs)
        found = _device_arrays(result)
        if found:
            scope.keep(*found)
        return result


tidy.keep = keep
