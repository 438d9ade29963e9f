"""Graph-level optimizations on the compiler IR (placeholder; passes come next)."""
from . import ir


def optimize(live, roots, keep):
    return live, []
