"""Draw a compiled Program: its instructions in order, registers and buffer reuse.

One node per instruction, top to bottom in tape order (an invisible chain of
heavy edges keeps the order). An edge runs from the instruction that wrote a
register to each instruction reading it, labelled with the register; a read
through a view (reshape, transpose, ...) names the view. Each physical buffer
slot has its own fill colour, so two instructions of one colour share memory,
and an instruction that takes over a slot says whose value it overwrites.
Host/device transfers are drawn as bold purple arrow-shaped nodes. Leaf registers
(inputs, params, constants) keep the graph colours; the registers the run
returns (outputs) are outlined red. A loop's or a branch's nested Programs are drawn
as clusters beside it (render/loops.py). With profile= (m.profile()'s TapeProfile of this
program) instructions are filled from white to red by their time instead, and
labelled with it.
"""
import graphviz

from ..errors import ExprError
from .graphs import CONST, INPUT, LEAF, ROOT
from .loops import draw_program_bodies
from .text import abbrev, label, plain

TRANSFERS = ("to_device", "to_host")
TRANSFER = dict(shape="cds", style="filled,bold", color="purple", fontcolor="purple4",
                penwidth="2", margin="0.25,0.05")
GRAPH_ATTR = dict(rankdir="TB", fontname="Helvetica", fontsize="11", nodesep="0.3",
                  ranksep="0.3", labelloc="t")
NODE_ATTR = dict(shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica",
                 fontsize="10", height="0.3", margin="0.08,0.04")
EDGE_ATTR = dict(arrowsize="0.6", fontname="Helvetica", fontsize="8", fontcolor="grey30")
ORDER = dict(style="invis", weight="20")
OPTIONS = ("title", "constants", "profile")


def slot_colour(slot):
    """A light fill per buffer slot; hues spread by the golden ratio so
    neighbouring slot numbers look different."""
    return f"{(slot * 0.618034) % 1:.3f} 0.30 1.000"


def _type(reg):
    dev = "" if reg.device == "cpu" else f" on {reg.device}"
    return f"{reg.dtype.name} {tuple(reg.shape)}{dev}"


def _leaf_attrs(reg):
    if reg.kind == "const":
        return dict(CONST)
    attrs = dict(LEAF, style="rounded")
    if reg.kind == "input":
        attrs.update(INPUT)
    return attrs


def _leaf_node(dot, reg, outputs):
    name = reg.nodes[0].label if reg.nodes else ""
    lines = [f"r{reg.id} {name}".rstrip(), f"{reg.kind} {_type(reg)}"]
    if reg.kind == "const" and reg.const is not None:
        lines.append(abbrev(reg.const))
    attrs = _leaf_attrs(reg)
    if reg.id in outputs:
        attrs.update(ROOT)
    dot.node(f"r{reg.id}", label(lines), tooltip=plain(reg.describe()), **attrs)


def _instr_lines(k, ins, prog, holder, grad_of):
    regs = prog.registers
    out = regs[ins.out]
    lines = [f"{k}: {ins.text()}"]
    if ins.comment():
        lines.append(ins.comment())
    for w in grad_of.get(out.id, ()):
        lines.append(f"gradient of {w.label}")
    lines.append(f"{_type(out)}, slot {out.slot}")
    prev = holder.get(out.slot)
    shared = [i for i in ins.ins if prog.root(i).kind == "buffer" and prog.root(i).slot == out.slot]
    if shared:
        lines.append(f"in place over r{shared[0]}")
    elif prev is not None and prev != out.id:
        was = regs[prev].label
        lines.append(f"reuses slot {out.slot} (was r{prev}{'' if was == f'r{prev}' else ' ' + was})")
    for t in ins.tmps:
        lines.append(f"scratch r{t} slot {regs[t].slot}")
    if ins.allocates:
        lines.append("allocates each run")
    return lines


def _source(prog, rid, writer):
    """The drawn node a read of register rid comes from, and the edge's text."""
    root = prog.root(rid)
    text = f"r{rid}"
    if rid != root.id:
        view = prog.registers[rid].view
        text += f" = {view[0] if view else 'view'} of r{root.id}"
    if root.kind == "buffer":
        k = writer.get(root.id)
        return (None if k is None else f"i{k}"), text
    return f"r{root.id}", text


def program_dot(prog, title=None, constants=True, profile=None, **unknown):
    if unknown:
        raise ExprError(f"render: a Program takes only {', '.join(OPTIONS)}; "
                        f"not {', '.join(sorted(unknown))}")
    regs = prog.registers
    outputs = set(prog.outputs)
    dot = graphviz.Digraph(name="program", graph_attr=GRAPH_ATTR, node_attr=NODE_ATTR,
                           edge_attr=EDGE_ATTR)
    head = (f"program: {len(prog.instrs)} instructions, {len(regs)} registers, "
            f"{len(prog.slots)} buffer slots, {prog.peak_bytes} B planned")
    if profile is not None:     # a TapeProfile of this program: fill by time, not by slot
        profile.check(prog)
        head += "\n" + profile.headline()
    dot.attr(label=label([title, head] if title else [head]))

    read = {prog.root(i).id for ins in prog.instrs for i in ins.ins} | {prog.root(i).id for i in outputs}
    leaves = [r for r in regs if r.id in read and r.kind in ("input", "param", "const")
              and (constants or r.kind != "const")]
    with dot.subgraph() as top:
        top.attr(rank="source")
        for reg in leaves:
            _leaf_node(top, reg, outputs)
    shown = {f"r{r.id}" for r in leaves}

    grad_of = {}
    for w, rid in getattr(prog, "grads", ()):
        grad_of.setdefault(rid, []).append(w)
    holder, writer = {}, {}
    for k, ins in enumerate(prog.instrs):
        out = regs[ins.out]
        attrs = {"fillcolor": slot_colour(out.slot) if profile is None else profile.colour(k)}
        if ins.op in TRANSFERS:
            attrs.update(TRANSFER)
        if out.id in outputs:
            attrs.update(ROOT)
        tip = out.describe()
        lines = _instr_lines(k, ins, prog, holder, grad_of)
        if profile is not None:
            lines.insert(1, profile.note(k))
        dot.node(f"i{k}", label(lines), tooltip=plain(tip), **attrs)
        for rid in ins.ins:
            src, text = _source(prog, rid, writer)
            if src is not None and (src.startswith("i") or src in shown):
                dot.edge(src, f"i{k}", label=plain(text))
        if k:
            dot.edge(f"i{k - 1}", f"i{k}", **ORDER)
        for t in ins.tmps:
            holder[regs[t].slot] = t
        holder[out.slot] = out.id
        writer[out.id] = k
        for _, rid, _ in ins.redirect:  # members the instruction wrote elsewhere
            writer[rid] = k
        if ins.bodies:
            draw_program_bodies(dot, prog, k, ins)
    return dot
