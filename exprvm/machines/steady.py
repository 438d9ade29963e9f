"""Steady garbage collection for training loops: `with ev.steady_gc(): ...`.

A LispMachine loop builds a new graph every step. A graph and its nodes refer to each
other (node.graph, graph.nodes), so a dropped graph is freed by Python's cyclic
collector, not by reference counting; its objects live long enough (a step) to reach the
oldest generation, and a collection of that generation walks every object the process
holds -- the model, the programs of the replay cache, every module loaded. On the
adding problem that was one step in a hundred taking 20-30 times the median.

    with ev.steady_gc():                  # after the model is built
        for step in range(steps):
            ...

On entering the block, garbage is collected and everything alive is frozen
(gc.freeze: the cyclic collector no longer walks it). A collection inside the block
then walks only what was made since: the last steps' graphs. The long-lived objects
made inside the block are frozen as they come: a program the replay cache compiles, and
the fused program a tier swaps in (settle(), called by the machines: a collection of
what is not frozen, then gc.freeze). Leaving the outermost block unfreezes everything
(gc.unfreeze), so that later collections see every object again and free what became
garbage meanwhile.

This is a choice of the code that opens the block: nothing else in exprvm changes the
collector's state, but for compile_graph pausing it while it compiles (gc.disable, and
enable again if it was enabled; a background build's compile does not pause it).

NOTE: a frozen object is freed only by reference counting while the block lasts: a
frozen structure that becomes cyclic garbage inside it (a program evicted from a full
replay cache, the graph of the step during which a program was compiled) waits for the
block's end. Nested blocks are one block; threads share it (the collector is the
process's).
"""
import contextlib
import gc
import threading

_lock = threading.Lock()
_open = [0]         # blocks open (nested ones, other threads' ones)


@contextlib.contextmanager
def steady_gc():
    """A block in which the cyclic collector walks only recent objects (see the module
    docstring). Returns nothing; use as a context manager."""
    with _lock:
        _open[0] += 1
        if _open[0] == 1:
            gc.collect()
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _open[0] -= 1
            if _open[0] == 0:
                gc.unfreeze()


def settle():
    """Inside a steady_gc block: collect what is not frozen, then freeze what is alive (a
    program just compiled or swapped in, long-lived from now on). Outside: nothing."""
    if not _open[0]:
        return
    with _lock:
        if _open[0]:
            gc.collect()
            gc.freeze()


def active():
    """Is a steady_gc block open?"""
    return _open[0] > 0
