"""What both machines share: logging, NaN/Inf checks, run-time errors, feeds."""
import numpy as np

from ..errors import ExprError, FeedError, NumericError, RunError


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
