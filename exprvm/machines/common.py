"""What both machines share: logging, NaN/Inf checks, run-time errors, feeds."""
import numpy as np

from ..core import Graph, Node
from ..errors import ExprError, FeedError, NumericError, RunError, UsageError


def log(logger, msg):
    """Tell a logging.Logger (at debug level) or a plain callable; None: nothing."""
    if logger is None:
        return
    if callable(getattr(logger, "debug", None)):
        logger.debug(msg)
    else:
        logger(msg)


def check_finite(value, what, nan, inf):
    """Raise NumericError if value holds a NaN (nan=True) or an Inf (inf=True)."""
    if value.dtype.kind != "f":
        return
    if nan and np.isnan(value).any():
        raise NumericError(f"NaN in {what}")
    if inf and np.isinf(value).any():
        raise NumericError(f"Inf in {what}")


def run_error(e, where):
    """A failure inside an op, re-raised as a typed error that says where: the same type
    for exprvm's own errors, RunError (naming the Python exception) for anything else."""
    msg = f"{where}: {e}"
    if isinstance(e, ExprError):
        return type(e)(msg)
    return RunError(f"{type(e).__name__} in {msg}")


def node_site(node):
    """`label = op(...) made at file:line` of an op node."""
    return f"{node.label} = {node.op}(...) made at {node.site}"


def check_feed_graph(node, graph, who):
    """FeedError unless node is a node of graph (a feed for another graph's node would be
    ignored, and the run would use a stale input)."""
    if getattr(node, "graph", None) is not graph:
        owner = getattr(getattr(node, "graph", None), "name", None)
        what = node.describe() if hasattr(node, "describe") else repr(node)
        raise FeedError(f"{who}: feed for {what} of graph {owner!r}, but this machine runs graph "
                        f"{graph.name!r}")


def check_graph_arg(g, who, hint):
    """UsageError unless g is a Graph; a node gets the call that runs it named."""
    if isinstance(g, Graph):
        return
    if isinstance(g, Node):
        raise UsageError(f"{who} takes a Graph, got node {g.describe()}; run it with "
                         f"ev.{who}({g.label}.graph, {hint}{g.label}) (the graph the node belongs to)")
    raise UsageError(f"{who} takes a Graph (ev.Graph()), got {type(g).__name__}")


def node_list(nodes, who, what):
    """A node or an iterable of nodes, as a list (UsageError naming what else it got)."""
    if isinstance(nodes, Node):
        return [nodes]
    if isinstance(nodes, (str, bytes, dict)) or not hasattr(nodes, "__iter__"):
        raise UsageError(f"{who}: {what}= takes a node or an iterable of nodes, got {type(nodes).__name__}")
    out = list(nodes)
    for n in out:
        if not isinstance(n, Node):
            raise UsageError(f"{who}: {what}= takes nodes, got {type(n).__name__} ({n!r:.60})")
    return out


def unfed(nodes, who):
    """The message for inputs a run was not fed."""
    names = ", ".join(n.describe() for n in nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    return (f"{who}: no value for input {names}; every input is fed in each run "
            f"(run({{{nodes[0].label}: array, ...}})), or bound to persist with ev.let(node, array)")
