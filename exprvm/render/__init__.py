"""Graphs, their gradients and compiled programs as graphviz drawings.

ev.to_dot(obj, ...) -> graphviz.Digraph; ev.render(obj, path) writes .svg, .png,
.pdf or .dot. obj is a Graph, a node or list of nodes (drawn with everything they
depend on) or a compiled Program (m.program of a TapeMachine). Drawing only
reads: no node is built, no value or gradient is touched.

Options for graphs (see view.py and graphs.py for the details):
  root=      node(s) outlined red; default: the costs ev.grad was given, else
             the nodes nobody reads
  around=, depth=
             only the nodes within `depth` edges of the given nodes
  collapse=  fold repeated unrolled steps: "site", a regular expression over
             node labels, or a function node -> key (None: keep the node)
  constants= False hides constants (their readers list them instead)
  gradients= False hides the nodes ev.grad added
  values=    False leaves values and gradients out of the labels
  title=     a caption

For every drawing: layout= "auto" (default), "full" or "fast". dot's default layout of
a drawing with more than FAST_ABOVE edges (a compiled 25-step LSTM training step has
1,100) takes many minutes; "fast" draws straight edges with fewer layout passes
(FAST_LAYOUT), seconds for such a drawing. "auto" uses it above FAST_ABOVE edges.
"""
import os

import graphviz

from ..errors import BackendError, ExprError
from ..core import Graph, Node, ancestors
from ..compiler import Program
from .graphs import graph_dot

__all__ = ["render", "to_dot"]

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}


# NOTE: measured with graphviz 2.43 on the char-RNN LSTM step's program (1,128 nodes,
# 1,116 edges): the default layout did not finish in 10 minutes, straight edges alone
# or fewer network-simplex passes alone not in 2; both with a crossing-minimization
# limit took 10 s.
FAST_ABOVE = 600
FAST_LAYOUT = {"splines": "line", "nslimit": "1", "nslimit1": "1", "mclimit": "0.1"}


def to_dot(obj, layout="auto", **options):
    """A graphviz.Digraph of a Graph, a node, a list of nodes or a compiled Program."""
    if layout not in ("auto", "full", "fast"):
        raise ExprError(f"render: layout must be 'auto', 'full' or 'fast', got {layout!r}")
    dot = _to_dot(obj, **options)
    edges = sum("->" in line for line in dot.body)
    if layout == "fast" or (layout == "auto" and edges > FAST_ABOVE):
        dot.graph_attr.update(FAST_LAYOUT)
    return dot


def _to_dot(obj, **options):
    if isinstance(obj, Graph):
        return graph_dot(list(obj.nodes), obj, **options)
    if isinstance(obj, Node) or (isinstance(obj, (list, tuple)) and obj
                                 and all(isinstance(n, Node) for n in obj)):
        nodes = [obj] if isinstance(obj, Node) else list(obj)
        graph = nodes[0].graph
        if any(n.graph is not graph for n in nodes):
            raise ExprError("render: the nodes belong to different graphs")
        return graph_dot(ancestors(nodes), graph, **options)
    if isinstance(obj, Program):
        from .program import program_dot
        return program_dot(obj, **options)
    raise ExprError(f"render: cannot draw a {type(obj).__name__}; give a Graph, nodes "
                    "or a compiled Program")


def _pipe(dot, fmt):
    try:
        return dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise BackendError("render: graphviz's `dot` program was not found; install graphviz "
                           "(apt-get install graphviz, brew install graphviz) or write .dot") from None


def render(obj, path, format=None, **options):
    """Draw obj into `path`; the format comes from the suffix unless given. Returns path."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    fmt = format or FORMATS.get(suffix)
    if fmt is None:
        raise ExprError(f"render: cannot tell the format of {path!r}; use a suffix of "
                        f"{', '.join(FORMATS)} or pass format=")
    dot = to_dot(obj, **options)
    data = dot.source.encode("utf-8") if fmt in ("dot", "gv") else _pipe(dot, fmt)
    with open(path, "wb") as f:
        f.write(data)
    return path


def svg(obj, **options):
    """SVG text of a drawing, or None when graphviz's dot is missing (for Jupyter's
    _repr_svg_, which falls back to the text repr on None)."""
    try:
        return to_dot(obj, **options).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        return None


def _repr_svg_(self):
    """The drawing, for Jupyter (which shows the text repr when this gives None)."""
    return svg(self)


# NOTE: installed here, as exprvm.ops installs Node's operators: the core and the compiler
# never import the renderer (it stands above them).
Graph._repr_svg_ = Program._repr_svg_ = _repr_svg_
