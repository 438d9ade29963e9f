"""Loops and branches in drawings: each body as a cluster beside its loop.

In a graph drawing, a loop node (scan, while_loop, cond) gets one cluster per body with
the body's own nodes: its inputs (the carries, the rows of the xs, the captured nodes)
at the bottom, its outputs on top, a bold dashed back edge from each new carry to the
carry it replaces (the next iteration), and a dotted edge from each body output to the
loop node. In a program drawing, a loop instruction gets one cluster per nested
Program with its instructions in tape order, the back edge running from the body's last
instruction to its first.
"""
from .text import label, plain

BODY_CLUSTER = dict(style="rounded,dashed", color="darkorange", fontcolor="darkorange4", labelloc="b")
BACK_EDGE = dict(style="dashed,bold", color="darkorange", fontcolor="darkorange4", constraint="false")
# NOTE: constraint=false on an edge into a cluster crashed dot 2.43 (SIGSEGV); these keep it.
TO_LOOP = dict(style="dotted", color="darkorange")
LOOPS = ("scan", "while_loop", "cond")


def _bodies(node):
    p = node.params
    if node.op == "cond":
        return [("true", p["true"]), ("false", p["false"])]
    if node.op == "while_loop":
        return [("condition", p["cond"]), ("body", p["body"])]
    return [("step", p["body"])]


def _carries(node, key):
    """How many leading inputs of a body are carried from one iteration to the next."""
    if node.op == "cond" or key == "condition":
        return 0 if node.op == "cond" else node.params["n_carry"]
    return node.params["n_carry"]


def draw_graph_bodies(dot, nodes, drawn_id):
    """A cluster per body of every loop among `nodes`. drawn_id(node) is the id the loop
    node has in the drawing (or None when it is not drawn)."""
    for n in nodes:
        if n.op not in LOOPS or n.opdef is None or drawn_id(n) is None:
            continue
        for key, body in _bodies(n):
            _graph_body(dot, n, key, body, drawn_id(n))


def _graph_body(dot, loop, key, body, loop_id):
    prefix = f"b{loop.id}{key[0]}"
    ins = {x.id: k for k, x in enumerate(body.inputs)}
    shown = list(body.inputs) + [x for x in body.order]
    ids = {x.id for x in shown}
    n_carry = _carries(loop, key)
    with dot.subgraph(name=f"cluster_{prefix}") as c:
        c.attr(label=plain(f"{loop.label}: {key} {body.name} (at {body.site})"), **BODY_CLUSTER)
        for x in shown:
            what = ("carry" if ins[x.id] < n_carry else "input") if x.id in ins else x.op
            lines = [x.label, what if x.id in ins else _op(x), f"{x.dtype.name} {x.shape}"]
            c.node(f"{prefix}_{x.id}", label(lines), tooltip=plain(x.describe()),
                   **({"style": "rounded,filled", "fillcolor": "lightyellow"} if x.id in ins else {}))
        for x in body.order:
            for y in x.inputs:
                if y.id in ids:
                    c.edge(f"{prefix}_{y.id}", f"{prefix}_{x.id}")
    for k, out in enumerate(body.outputs):
        if k < n_carry:
            dot.edge(f"{prefix}_{out.id}", f"{prefix}_{body.inputs[k].id}",
                     label=plain("next iteration" if k == 0 else ""), **BACK_EDGE)
        dot.edge(f"{prefix}_{out.id}", loop_id, **TO_LOOP)


def _op(node):
    return node.op if not node.params or node.opdef is None or node.opdef.multiple_results else \
        f"{node.op}(...)"


def draw_program_bodies(dot, prog, k, ins, prefix=""):
    """Clusters for the nested Programs of loop instruction k of prog."""
    names = ins.meta.get("bodies", ()) if ins.meta else ()
    loops_back = ins.meta.get("kind") in ("scan", "while") if ins.meta else False
    for b, body in enumerate(ins.bodies):
        tag = f"{prefix}b{k}_{b}_"
        with dot.subgraph(name=f"cluster_{tag}") as c:
            name = names[b] if b < len(names) else f"body {b}"
            c.attr(label=plain(f"{k}: {ins.op} {name}: {len(body.instrs)} instructions, "
                               f"{body.peak_bytes} B planned"), **BODY_CLUSTER)
            writer = {}
            for j, sub in enumerate(body.instrs):
                lines = [f"{j}: {sub.text()}"]
                if sub.comment():
                    lines.append(sub.comment())
                c.node(f"{tag}i{j}", label(lines), tooltip=plain(body.registers[sub.out].describe()))
                for rid in sub.ins:
                    src = writer.get(body.root(rid).id)
                    if src is not None:
                        c.edge(f"{tag}i{src}", f"{tag}i{j}", label=plain(f"r{rid}"))
                if j:
                    c.edge(f"{tag}i{j - 1}", f"{tag}i{j}", style="invis", weight="20")
                writer[sub.out] = j
                if sub.bodies:
                    draw_program_bodies(c, body, j, sub, tag)
        if body.instrs:
            dot.edge(f"{prefix}i{k}", f"{tag}i0", **TO_LOOP)
            if loops_back and len(body.instrs) > 1:
                dot.edge(f"{tag}i{len(body.instrs) - 1}", f"{tag}i0", label=plain("next iteration"),
                         **BACK_EDGE)
