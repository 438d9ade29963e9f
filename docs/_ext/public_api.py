"""What exprvm makes public, walked at the time it is asked: the API reference is
generated from this walk (apigen.py) and tests/test_docstrings.py checks every callable
it finds for a docstring.

A namespace's public names are its ``__all__`` when it has one, else every name in it
that does not start with "_". The namespaces are ``exprvm`` and the public modules under
it: those named in ``exprvm.__all__`` (when it exists) or listed in PUBLIC_MODULES,
and, inside those, any further module that ``__all__`` names (``ev.solvers.hooks``).
A callable is public when it is a function or a class defined in exprvm and reached
under a public name; a public class's public methods and properties count too.
"""
import importlib
import inspect
import types

# ev.<name> modules users call into (the stages' packages, ev.core, ev.ops, ..., are not).
PUBLIC_MODULES = ("nn", "solvers", "solvers.hooks", "schedules", "init", "data", "distributed", "cuda",
                  "replay", "random", "onnx", "train")

# NOTE: packages whose names are reachable on exprvm (importing a subpackage sets it as
# an attribute) but which hold the implementation, not the API.
INTERNAL = {"compiler", "core", "errors", "kernels", "machines", "ops", "render"}


def names(mod):
    """The public names of one module: its __all__, or its names without a leading "_"."""
    listed = getattr(mod, "__all__", None)
    if listed is not None:
        return list(listed)
    return [n for n in dir(mod) if not n.startswith("_")]


def modules():
    """[(dotted name under exprvm, module)] of every public namespace, exprvm first."""
    import exprvm
    out = [("exprvm", exprvm)]
    listed = getattr(exprvm, "__all__", None)
    subs = list(PUBLIC_MODULES)
    if listed is not None:
        subs += [n for n in listed if isinstance(getattr(exprvm, n, None), types.ModuleType)]
    seen = {id(exprvm)}
    for sub in subs:
        # `ev.solvers` is the module exprvm.train.solvers: follow the attributes first
        mod = exprvm
        for part in sub.split("."):
            mod = getattr(mod, part, None)
        if not isinstance(mod, types.ModuleType):
            try:
                mod = importlib.import_module(f"exprvm.{sub}")
            except ImportError:
                continue
        if id(mod) in seen or sub.split(".")[0] in INTERNAL:
            continue
        seen.add(id(mod))
        out.append((f"exprvm.{sub}", mod))
    return out


def _ours(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "exprvm"


def callables():
    """[(qualified public name, object)]: every public function, class, method and property,
    each object once (under the first name that reaches it)."""
    out, seen = [], set()
    for modname, mod in modules():
        for name in names(mod):
            obj = getattr(mod, name, None)
            if isinstance(obj, types.ModuleType) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not _ours(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            qual = f"{modname}.{name}"
            out.append((qual, obj))
            if inspect.isclass(obj):
                out.extend(_members(qual, obj, seen))
    return out


def _members(qual, cls, seen):
    out = []
    for klass in cls.__mro__:
        if not _ours(klass) or klass.__name__.startswith("_"):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_") or (qual, name) in seen:
                continue
            seen.add((qual, name))
            fn = attr.fget if isinstance(attr, property) else getattr(attr, "__func__", attr)
            if inspect.isfunction(fn) and id(fn) not in seen:
                seen.add(id(fn))
                # NOTE: a property's docstring is its own (property(fget, doc=...)), not fget's
                out.append((f"{qual}.{name}", attr if isinstance(attr, property) else fn))
    return out
