"""Which nodes a drawing shows: the subgraph, the root, a neighbourhood, hidden
constants and folded repeats. Pure reads of the graph: nothing here builds a
node or touches a value.

Folding (collapse=) is meant for unrolled loops. A key function maps each node
to a hashable (or None: never folded); nodes sharing a key become one drawn
node that shows how many it stands for, and every folded node sits in one
"repeated" cluster. collapse="site" is the built-in key: a node made by the same
source line, with the same op and role, reading operands of the same kinds (an
operand's op, or a leaf's name with its digits removed) is one more step of the
same loop. An RNN unrolled 25 times folds to one step drawn once, each op
marked x25, with the recurrence as an edge back into the step; inputs x0..x24
fold to one node "x0 … x24". A string other than "site" is a regular expression:
nodes whose label matches it in full fold by op and role (collapse=r"x\\d+").
Roots and the nodes ev.grad returned (grad_of set) are never folded: they are
what one looks for in the picture.
"""
import re
from collections import Counter, deque

from ..errors import ExprError
from ..core import Node

_DIGITS = re.compile(r"\d+")


def stem(node):
    """What kind of operand a node is, ignoring which loop step made it."""
    if node.is_leaf and node.name:
        return (node.op, _DIGITS.sub("#", node.name))
    return (node.op,)


def site_key(node):
    return (node.role, node.op, node.site, node.shape, node.dtype.str, stem(node),
            tuple(stem(x) for x in node.inputs))


def _key_function(collapse):
    if collapse is None or collapse is False:
        return None
    if callable(collapse):
        return collapse
    if collapse == "site":
        return site_key
    if isinstance(collapse, (str, re.Pattern)):
        pattern = re.compile(collapse)
        return lambda n: (n.role, n.op, pattern.pattern) if pattern.fullmatch(n.label) else None
    raise ExprError(f"render: collapse= takes 'site', a regular expression or a function "
                    f"node -> key, not {type(collapse).__name__}")


def _as_nodes(what, arg):
    if what is None:
        return []
    nodes = [what] if isinstance(what, Node) else list(what)
    for n in nodes:
        if not isinstance(n, Node):
            raise ExprError(f"render: {arg}= takes nodes, got {type(n).__name__}")
    return nodes


class Family:
    """Nodes folded into one drawn node."""

    def __init__(self, index, members):
        self.index = index
        self.members = members          # sorted by id

    @property
    def id(self):
        return f"f{self.index}"

    @property
    def last(self):
        return self.members[-1]


class View:
    """The nodes to draw and how: built once per drawing from options."""

    def __init__(self, nodes, graph=None, root=None, around=None, depth=2, collapse=None,
                 constants=True, gradients=True):
        nodes = [n for n in nodes if gradients or n.role != "grad"]
        self.readers = {n.id: [] for n in nodes}
        for n in nodes:
            for x in n.inputs:
                if x.id in self.readers and n not in self.readers[x.id]:
                    self.readers[x.id].append(n)
        self.roots = self._roots(nodes, graph, _as_nodes(root, "root"))
        centres = _as_nodes(around, "around")
        if centres:
            nodes = self._around(nodes, centres, depth)
        shown = {n.id for n in nodes}
        # Inputs and readers left out of a neighbourhood are counted on the node instead.
        self.hidden_consts = {}
        self.cut = {}
        if not constants:
            nodes = [n for n in nodes if n.op != "const"]
        kept = {n.id for n in nodes}
        for n in nodes:
            consts = [x for x in n.inputs if x.op == "const" and x.id in shown and x.id not in kept]
            if consts:
                self.hidden_consts[n.id] = consts
            ins = sum(1 for x in n.inputs if x.id not in shown)
            outs = sum(1 for r in self.readers.get(n.id, ()) if r.id not in shown)
            if ins or outs:
                self.cut[n.id] = (ins, outs)
        self.nodes = nodes
        self.ids = kept
        self.families, self.family_of = self._fold(nodes, _key_function(collapse))

    # -- root ---------------------------------------------------------------
    def _roots(self, nodes, graph, root):
        if root:
            for n in root:
                if nodes and n.graph is not nodes[0].graph:
                    raise ExprError(f"render: root {n.label} (made at {n.site}) is not in this graph")
            return {n.id for n in root}
        ids = {n.id for n in nodes}
        if graph is not None:
            costs = {c.id for c in graph.costs.values() if c.id in ids}
            if costs:
                return costs
        sinks = [n for n in nodes if not self.readers[n.id] and n.op != "const"]
        forward = {n.id for n in sinks if n.role == "forward"}
        return forward or {n.id for n in sinks}

    # -- neighbourhood ----------------------------------------------------------
    def _around(self, nodes, centres, depth):
        """Nodes within `depth` edges of the centres, along data edges either way and
        from a gradient to its node. Constants end a path: a shared 1.0 would
        otherwise connect everything."""
        if depth is None or int(depth) < 0:
            raise ExprError(f"render: depth= must be a non-negative int, got {depth!r}")
        by_id = {n.id: n for n in nodes}
        gradient = {n.grad_of.id: n for n in nodes if n.grad_of is not None}
        dist = {c.id: 0 for c in centres if by_id.get(c.id) is c}
        if not dist:
            raise ExprError("render: none of the around= nodes is in the drawing: "
                            + ", ".join(f"{c.label} (made at {c.site})" for c in centres))
        queue = deque(dist)
        while queue:
            i = queue.popleft()
            n = by_id[i]
            if dist[i] == depth or (n.op == "const" and dist[i] > 0):
                continue
            pair = [m for m in (n.grad_of, gradient.get(i)) if m is not None]
            near = list(n.inputs) + self.readers[i] + pair
            for m in near:
                if m.id in by_id and m.id not in dist:
                    dist[m.id] = dist[i] + 1
                    queue.append(m.id)
        return [n for n in nodes if n.id in dist]

    # -- folding ----------------------------------------------------------------
    def _fold(self, nodes, key):
        if key is None:
            return [], {}
        groups = {}
        for n in nodes:
            if n.id in self.roots or n.grad_of is not None:
                continue
            k = key(n)
            if k is not None:
                groups.setdefault(k, []).append(n)
        families, family_of = [], {}
        for members in groups.values():
            if len(members) < 2:
                continue
            fam = Family(len(families), sorted(members, key=lambda m: m.id))
            families.append(fam)
            for m in members:
                family_of[m.id] = fam
        return families, family_of

    def repeat_count(self, role):
        """How many times the folded step repeats: the most common family size."""
        sizes = Counter(len(f.members) for f in self.families if f.members[0].role == role)
        return sizes.most_common(1)[0][0] if sizes else 0

    def unit(self, node):
        """The drawn node standing for `node`: its Family, or the node itself."""
        return self.family_of.get(node.id, node)
