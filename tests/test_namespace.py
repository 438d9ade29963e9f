"""The public namespace: what `import exprvm as ev` and its public modules show is their
`__all__`, every public name is documented, and no internal op or imported helper leaks.

New public names need no edit here: a name is accepted when it is documented and listed
in the `__all__` of the exprvm package it comes from."""
import inspect
import sys
import types

import pytest

import exprvm as ev

# never public: fused ops the VJPs build, and what modules import for their own use
INTERNAL = {"xent_grad", "unary_grad", "np", "math", "json", "threading", "warnings", "weakref",
            "arg_errors", "same_float_dtype", "norm_dtype", "bound_value", "check_value"}


def public_modules():
    mods = {"exprvm": ev}
    for name in ev.__all__ + ["data", "onnx", "train"]:
        obj = getattr(ev, name, None)
        if isinstance(obj, types.ModuleType):
            mods[f"ev.{name}"] = obj
    return mods


def documented(obj):
    if not (inspect.isroutine(obj) or inspect.isclass(obj) or isinstance(obj, types.ModuleType) or callable(obj)):
        return True                     # a constant: documented where it is defined
    return bool((getattr(obj, "__doc__", None) or "").strip())


def listed_somewhere(name):
    """Is name in the __all__ of some exprvm package?"""
    return any(name in getattr(m, "__all__", ()) for k, m in list(sys.modules.items())
               if k == "exprvm" or k.startswith("exprvm."))


@pytest.mark.parametrize("label", sorted(public_modules()))
def test_a_public_module_shows_its_all_and_documents_it(label):
    mod = public_modules()[label]
    assert isinstance(getattr(mod, "__all__", None), (list, tuple)), f"{label} has no __all__"
    assert documented(mod), f"{label} has no docstring"
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{label}.__all__ names what it lacks: {missing}"
    undocumented = [n for n in mod.__all__ if not documented(getattr(mod, n))]
    assert not undocumented, f"{label}: public names without a docstring: {undocumented}"
    shown = {n for n in dir(mod) if not n.startswith("_")}
    extra = sorted(n for n in shown - set(mod.__all__)
                   if not (isinstance(getattr(mod, n), types.ModuleType) and getattr(mod, n).__name__.startswith("exprvm")))
    assert not extra, f"dir({label}) shows names that are not in its __all__: {extra}"
    assert not INTERNAL & shown, f"{label} shows internals: {sorted(INTERNAL & shown)}"
    # a class deriving from a public class (a new solver, block or error) is public too:
    # listed, not hidden by __dir__
    bases = tuple(v for v in (getattr(mod, n) for n in mod.__all__) if inspect.isclass(v))
    unlisted = sorted(n for n, v in vars(mod).items() if not n.startswith("_") and n not in mod.__all__
                      and inspect.isclass(v) and bases and issubclass(v, bases))
    assert not unlisted, f"{label}: public classes missing from its __all__: {unlisted}"


def test_every_name_in_exprvm_is_public_or_a_stage_package():
    leaks = []
    for name, obj in vars(ev).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, types.ModuleType):
            if not obj.__name__.startswith("exprvm."):
                leaks.append(f"{name} (module {obj.__name__})")
        elif name not in ev.__all__ and not (documented(obj) and listed_somewhere(name)):
            leaks.append(name)
    assert not leaks, f"exprvm's namespace holds names that no package publishes: {leaks}"
    assert not INTERNAL & set(ev.__all__)


def test_all_is_derived_from_the_packages_lists():
    from exprvm import ops
    assert set(ops.__all__) <= set(ev.__all__) | {"random"}
    assert {"function", "value_and_grad", "grad", "TapeMachine", "UsageError", "TraceError"} <= set(ev.__all__)
    assert {"nn", "solvers", "random", "replay", "init", "schedules", "distributed", "cuda", "train"} <= set(ev.__all__)
    assert not {"core", "compiler", "machines", "kernels", "ops", "tracing", "errors"} & set(dir(ev))
