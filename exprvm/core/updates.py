"""State updates registered for a graph: {state leaf: its new value node}, made by the
blocks that build them (batch norm's running statistics in training mode).

A machine writes such updates back only when given them (``updates=``); what builds a
machine for a graph it traced itself (ev.function, ev.train's steps) asks this registry
for them, so a block's state moves as its user expects.

The registry never keeps a graph or a node alive: graphs are held weakly, nodes by
weak reference.
"""
import weakref

_UPDATES = weakref.WeakKeyDictionary()     # graph -> {id(state): (weakref state, weakref new)}


def register_update(state, new):
    """Record that leaf ``state`` takes the value of ``new`` (a node of the same graph) at
    the end of every run of a machine over that graph (a later registration wins)."""
    mine = _UPDATES.setdefault(state.graph, {})
    mine[state.id] = (weakref.ref(state), weakref.ref(new))


def updates_of(g):
    """{state node: new value node} registered for graph ``g`` (nodes still alive)."""
    out = {}
    for s, n in _UPDATES.get(g, {}).values():
        state, new = s(), n()
        if state is not None and new is not None:
            out[state] = new
    return out
