"""Every public callable has a docstring, and the examples in them run.

"Public" is what docs/_ext/public_api.py walks at the time the test runs (the same
walk the API reference is generated from): the names of ``exprvm`` and its public
modules (their ``__all__`` where they have one), the functions and classes defined in
exprvm among them, and those classes' public methods and properties.
"""
import doctest
import inspect
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import public_api  # noqa: E402

CALLABLES = public_api.callables()


def test_the_walk_finds_the_api():
    names = {q for q, _ in CALLABLES}
    for want in ("exprvm.Graph", "exprvm.Graph.scalar", "exprvm.tanh", "exprvm.TapeMachine.run",
                 "exprvm.LispMachine.run", "exprvm.data.DataLoader", "exprvm.solvers.Adam",
                 "exprvm.solvers.hooks.WeightDecay", "exprvm.nn.Linear"):
        assert want in names, want
    assert not any(q.rsplit(".", 1)[1].startswith("_") for q in names)


def test_every_public_callable_has_a_docstring():
    missing = [q for q, obj in CALLABLES if not (inspect.getdoc(obj) or "").strip()]
    assert not missing, f"{len(missing)} public callables without a docstring:\n  " + "\n  ".join(missing)


def test_a_callable_without_a_docstring_is_found(monkeypatch):
    import exprvm as ev

    def undocumented():
        pass

    undocumented.__module__ = "exprvm.core"
    monkeypatch.setattr(ev, "undocumented_for_the_test", undocumented, raising=False)
    if hasattr(ev, "__all__"):
        monkeypatch.setattr(ev, "__all__", list(ev.__all__) + ["undocumented_for_the_test"])
    found = [q for q, obj in public_api.callables() if obj is undocumented]
    assert found == ["exprvm.undocumented_for_the_test"]


EXAMPLES = [(q, obj) for q, obj in CALLABLES if ">>>" in (inspect.getdoc(obj) or "")]


@pytest.mark.parametrize("qual,obj", EXAMPLES, ids=[q for q, _ in EXAMPLES])
def test_docstring_examples_run(qual, obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import exprvm
    module = sys.modules.get(getattr(obj, "__module__", ""), exprvm)
    globs = dict(vars(module))
    globs.update(np=np, ev=exprvm)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, qual, globs=globs)
    assert tests and tests[0].examples
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{qual}: {result.failed} of its examples failed (see the output above)"
