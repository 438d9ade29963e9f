"""Draw an expression graph and its gradient nodes (Gorgonia's conventions).

Colours: the root (the cost) is outlined red, leaves (params, inputs) green,
inputs are filled light yellow, constants are small grey boxes, gradient nodes
sit in cluster_gradients and a dashed edge runs from each gradient ev.grad
returned to the node it is the gradient of.

Layout: rankdir=BT, so the forward expression builds bottom-up (leaves at the
bottom, the cost on top). An edge between two gradient nodes is written
reversed (reader -> operand, dir=back, so the arrow still points at the reader):
the gradient chain therefore runs top-down, from d(cost) near the cost to dW
near W. Edges from forward nodes into gradient nodes carry constraint=false so
they draw without pulling the chains apart, and each gradient is pinned to its
node's level with rank=same (newrank=true lets a rank constraint span clusters).
"""
from collections import Counter

import graphviz

from .loops import draw_graph_bodies
from .text import abbrev, label, plain
from .view import Family, View

GRAPH_ATTR = dict(rankdir="BT", newrank="true", fontname="Helvetica", fontsize="11",
                  nodesep="0.25", ranksep="0.35", labelloc="t")
NODE_ATTR = dict(shape="box", style="rounded", fontname="Helvetica", fontsize="10",
                 height="0.3", margin="0.08,0.04")
EDGE_ATTR = dict(arrowsize="0.6", fontname="Helvetica", fontsize="8", fontcolor="grey40")
ROOT = dict(color="red", penwidth="2.5")
LEAF = dict(color="green", penwidth="2")
INPUT = dict(style="rounded,filled", fillcolor="lightyellow")
CONST = dict(style="filled", fillcolor="grey92", color="grey60", fontcolor="grey25",
             fontsize="8", height="0.2", margin="0.04,0.02")
FAMILY = dict(shape="box3d", style="")
# NOTE: with rankdir=BT a cluster's labelloc=b puts its caption on top.
GRAD_CLUSTER = dict(labelloc="b", style="rounded,filled", fillcolor="aliceblue", color="steelblue",
                    fontcolor="steelblue4")
REPEAT_CLUSTER = dict(labelloc="b", style="rounded,dashed", color="grey50", fontcolor="grey30")
GRAD_OF = dict(style="dashed", color="steelblue", constraint="false")
CROSS = dict(constraint="false", color="grey60")


def op_text(node):
    """The op with its parameters, e.g. sum(axis=1)."""
    if not node.params:
        return node.op
    args = []
    for k, v in sorted(node.params.items()):
        r = repr(v)
        args.append(f"{k}={r if len(r) <= 24 else r[:21] + '...'}")
    return f"{node.op}({', '.join(args)})"


def type_text(node):
    return f"{node.dtype.name} {node.shape}"


def value_lines(node, values):
    if not values:
        return []
    lines = []
    if node.value is not None:
        lines.append(f"value {abbrev(node.value)}")
    if node.grad is not None:
        lines.append(f"grad {abbrev(node.grad)}")
    return lines


def node_lines(node, view, values):
    if node.op == "const":
        return [node.name or abbrev(node.value), f"const {type_text(node)}"]
    lines = [node.label]
    if node.name or node.params:
        lines.append(op_text(node))
    wrt = node.grad_of
    # NOTE: a later ev.grad for the same node replaces g.grads[wrt] and g.costs[wrt].
    cost = node.graph.costs.get(wrt) if wrt is not None and node.graph.grads.get(wrt) is node else None
    if cost is not None:
        lines.append(f"d({cost.label})/d({node.grad_of.label})")
    lines.append(type_text(node))
    lines += value_lines(node, values)
    consts = view.hidden_consts.get(node.id)
    if consts:
        lines.append("with const " + ", ".join(c.name or abbrev(c.value) for c in consts))
    ins, outs = view.cut.get(node.id, (0, 0))
    if ins or outs:
        hidden = [f"+{k} {what}{'s' if k > 1 else ''}" for k, what in ((ins, "input"), (outs, "reader")) if k]
        lines.append(" ".join(hidden) + " not shown")
    return lines


def family_lines(fam, values):
    first, last = fam.members[0], fam.last
    head = f"{first.name} … {last.name}" if first.name else op_text(first)
    lines = [f"{head} ×{len(fam.members)}"]
    if first.name:
        lines.append(op_text(first))
    types = {type_text(m) for m in fam.members}
    lines.append(types.pop() if len(types) == 1 else f"{len(types)} shapes")
    lines.append(f"made at {first.site}")
    last_values = value_lines(last, values)
    return lines + [f"last {v}" for v in last_values]


def style(node, is_root=False, family=False):
    attrs = dict(FAMILY) if family else {}
    if node.op == "const":
        attrs.update(CONST)
    elif node.op == "input":
        attrs.update(LEAF, **INPUT)
    elif node.is_leaf:
        attrs.update(LEAF)
    if family:  # NOTE: box3d cannot be rounded; keep only the fill
        attrs["style"] = "filled" if "fillcolor" in attrs else ""
    if is_root:
        attrs.update(ROOT)
    return attrs


def _draw_node(where, node, view, values):
    where.node(f"n{node.id}", label(node_lines(node, view, values)),
               tooltip=plain(node.describe()), **style(node, node.id in view.roots))


def _draw_family(where, fam, values):
    attrs = style(fam.members[0], family=True)
    ids = ", ".join(m.label for m in fam.members[:8]) + (" …" if len(fam.members) > 8 else "")
    where.node(fam.id, label(family_lines(fam, values)),
               tooltip=plain(f"{len(fam.members)} nodes folded: {ids}"), **attrs)


def _unit_id(unit):
    return unit.id if isinstance(unit, Family) else f"n{unit.id}"


def _draw_nodes(dot, view, values):
    fams = {"forward": [], "grad": []}
    for fam in view.families:
        fams[fam.members[0].role].append(fam)
    singles = [n for n in view.nodes if n.id not in view.family_of]
    for n in singles:
        if n.role != "grad":
            _draw_node(dot, n, view, values)
    if fams["forward"]:
        with dot.subgraph(name="cluster_repeat") as c:
            c.attr(label=plain(f"repeated ×{view.repeat_count('forward')}"), **REPEAT_CLUSTER)
            for fam in fams["forward"]:
                _draw_family(c, fam, values)
    grads = [n for n in singles if n.role == "grad"]
    if grads or fams["grad"]:
        with dot.subgraph(name="cluster_gradients") as c:
            c.attr(label=plain("gradients"), **GRAD_CLUSTER)
            for n in grads:
                _draw_node(c, n, view, values)
            if fams["grad"]:
                with c.subgraph(name="cluster_gradients_repeat") as r:
                    r.attr(label=plain(f"repeated ×{view.repeat_count('grad')}"), **REPEAT_CLUSTER)
                    for fam in fams["grad"]:
                        _draw_family(r, fam, values)


def _edge(dot, tail, head, kind, text):
    """One data edge from operand `tail` to reader `head`, laid out by kind."""
    if kind == "grad":   # reversed so the gradient chain runs top-down (see module doc)
        dot.edge(head, tail, dir="back", **({"taillabel": text} if text else {}))
    elif kind == "cross":
        dot.edge(tail, head, **CROSS, **({"headlabel": text} if text else {}))
    else:
        dot.edge(tail, head, **({"headlabel": text} if text else {}))


def _draw_edges(dot, view):
    folded = Counter()
    pairs = []
    for n in view.nodes:
        for i, x in enumerate(n.inputs):
            if x.id not in view.ids:
                continue
            kind = ("grad" if x.role == "grad" else "cross") if n.role == "grad" else "data"
            tail, head = view.unit(x), view.unit(n)
            if isinstance(tail, Family) or isinstance(head, Family):
                folded[(_unit_id(tail), _unit_id(head), kind)] += 1
            else:
                _edge(dot, _unit_id(tail), _unit_id(head), kind, str(i) if len(n.inputs) > 1 else "")
        if n.grad_of is not None and n.grad_of.id in view.ids:
            pairs.append((_unit_id(view.unit(n)), _unit_id(view.unit(n.grad_of))))
    for (tail, head, kind), count in folded.items():
        _edge(dot, tail, head, kind, f"×{count}" if count > 1 else "")
    for grad_id, of_id in pairs:
        dot.edge(grad_id, of_id, **GRAD_OF)
        with dot.subgraph() as same:
            same.attr(rank="same")
            same.node(grad_id)
            same.node(of_id)


def graph_dot(nodes, graph=None, *, root=None, around=None, depth=2, collapse=None,
              constants=True, gradients=True, values=True, title=None):
    """A graphviz.Digraph of `nodes` (a topologically ordered list)."""
    view = View(nodes, graph, root=root, around=around, depth=depth, collapse=collapse,
                constants=constants, gradients=gradients)
    dot = graphviz.Digraph(name="exprvm", graph_attr=GRAPH_ATTR, node_attr=NODE_ATTR,
                           edge_attr=EDGE_ATTR)
    if title:
        dot.attr(label=plain(title))
    _draw_nodes(dot, view, values)
    _draw_edges(dot, view)
    draw_graph_bodies(dot, view.nodes, lambda n: _unit_id(view.unit(n)) if n.id in view.ids else None)
    return dot
