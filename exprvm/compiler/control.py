"""Loops and branches in the compiler: one instruction each, holding nested Programs.

A loop node (op scan, while_loop, cond: ops/control) is one Val whose value is its
results packed side by side in one byte buffer (ir.packed_layout); its projections are
views of those bytes. Its body (or bodies) compile, with the same options, into
Programs of their own (compile_bodies): every level is a linear tape with its own
planned registers. A body Program reads its inputs from registers of kind "input" that
the loop points at the right memory each iteration, and writes its outputs into
registers of kind "external", memory the loop provides (a row of the stacked ys, the
next carry); see machines/loops.py for how a loop runs its bodies.

merge_loops: ev.grad asks a scan for its residuals by building the same scan (same
inputs, same body graph) with more outputs; the two are computed as one loop.
"""
import numpy as np

from ..core import OPS
from ..core.body import Body
from ..errors import CompileError
from . import ir

LOOPS = ("scan", "while_loop", "cond")


def _loop_key(v):
    """What makes two loop Vals one loop asked for different outputs, or None."""
    if v.kind != "op" or v.op not in LOOPS:
        return None
    p = v.params
    bodies = tuple(id(p[k].graph) for k in ("body", "cond", "true", "false") if k in p)
    rest = tuple((k, x) for k, x in sorted(p.items()) if k not in ("body", "summed", "results",
                                                                      "cond", "true", "false", "program"))
    return (v.op, bodies, tuple(id(x) for x in v.ins), repr(rest))


def _extends(big, small):
    """Are small's outputs the first of big's (same body graph, same summing)?"""
    for k in ("body",):
        if k in small.params:
            a, b = small.params[k], big.params[k]
            if a.inputs != b.inputs or b.outputs[:len(a.outputs)] != a.outputs:
                return False
    n = len(small.params["results"])
    return (big.params["results"][:n] == small.params["results"]
            and big.params.get("summed", ())[:len(small.params.get("summed", ()))]
            == small.params.get("summed", ()))


def merge_loops(live):
    """Compute a scan and the same scan asked for more outputs (by ev.grad) as one loop:
    the smaller's projections read the bigger's bytes (its results come first, so their
    offsets are the same). Returns the live Vals, in a topological order."""
    groups = {}
    for v in live:
        key = _loop_key(v)
        if key is not None and v.op == "scan":
            groups.setdefault(key, []).append(v)
    gone = set()
    for vs in groups.values():
        if len(vs) < 2:
            continue
        vs.sort(key=lambda v: -len(v.params["results"]))
        big = vs[0]
        for small in vs[1:]:
            if not _extends(big, small):
                continue
            for u in small.users:
                u.ins = [big if x is small else x for x in u.ins]
                big.users.append(u)
            for x in small.ins:
                x.users = [u for u in x.users if u is not small]
            big.nodes.extend(small.nodes)
            big.key = min(big.key, small.key)    # NOTE: it runs where the first of them did
            gone.add(id(small))
    if not gone:
        return live
    return ir.toposort([v for v in live if id(v) not in gone])


def prune_loops(live):
    """Drop the stacked or summed outputs of scans (and the stacks of while loops) that
    nothing reads -- the gradient of an input no one asked for -- from their bodies, so
    that the body does not compute them and the loop does not store them."""
    for v in live:
        if v.kind != "op" or v.op not in ("scan", "while_loop"):
            continue
        p = v.params
        results = p["results"]
        offsets, _ = ir.packed_layout(results)
        index = {off: k for k, off in enumerate(offsets)}
        used = {index[u.params["offset"]] for u in v.users if u.op == "unpack"}
        if any(u.op != "unpack" for u in v.users):
            continue
        nc = p["n_carry"]
        first = nc if v.op == "scan" else nc + 1     # the carries (and a while's count) stay
        keep = list(range(first)) + [k for k in range(first, len(results)) if k in used]
        if len(keep) == len(results):
            continue
        body = p["body"]
        outs = list(body.outputs[:nc]) + [body.outputs[k - first + nc] for k in keep[first:]]
        pruned = Body(body.graph, body.inputs, outs, body.name, body.site, body.remat)
        kept = list(range(nc)) + [k - first + nc for k in keep[first:]]     # body output indices
        pruned.visible = sum(1 for i in kept if i < body.visible)
        new = dict(p, body=pruned, results=tuple(results[k] for k in keep))
        if v.op == "scan":
            new["summed"] = tuple(p["summed"][k - nc] for k in keep[nc:])
        v.params = new
        moved, size = ir.packed_layout(new["results"])
        v.shape = (size,)
        where = {offsets[k]: moved[i] for i, k in enumerate(keep)}
        for u in v.users:
            u.params = dict(u.params, offset=where[u.params["offset"]])


def compile_bodies(live, options, device, compile_graph):
    """Compile every loop's bodies into Programs (params "program", or "programs" for
    a branch), with the enclosing program's options."""
    for v in live:
        if v.kind != "op" or v.op not in LOOPS:
            continue
        if device not in (None, "cpu"):
            raise CompileError(f"{v.op} ({_where(v)}): loops and branches run on the host; compile "
                               "without device= or keep the loop out of the device graph")
        body_opts = options.with_(grads=False, keep=(), updates=(), comm=None, external=True)
        p = v.params
        if v.op == "cond":
            progs = tuple(compile_graph(b.graph, list(b.outputs), body_opts.with_(inputs=b.inputs))
                          for b in (p["true"], p["false"]))
            v.params = dict(p, programs=progs)
        elif v.op == "while_loop":
            progs = tuple(compile_graph(b.graph, list(b.outputs), body_opts.with_(inputs=b.inputs))
                          for b in (p["cond"], p["body"]))
            v.params = dict(p, programs=progs)
        else:
            b = p["body"]
            shared = row_bound(b, p["n_carry"], p["summed"])
            v.params = dict(p, program=compile_graph(
                b.graph, list(b.outputs), body_opts.with_(inputs=b.inputs, external=tuple(shared.items()))))


def row_bound(body, n_carry, summed):
    """{carry position: output position of a stacked y that is the same node}: such a
    carry lives in the y's rows (machines/loops.py), so the two share one register."""
    out = {}
    for k in range(n_carry):
        for j, s in enumerate(summed):
            if not s and body.outputs[n_carry + j] is body.outputs[k]:
                out[k] = n_carry + j
                break
    return out


def _where(v):
    n = v.node
    return f"{n.label} made at {n.site}" if n is not None else "a loop"


def externals(em, index, outputs, shared=()):
    """A body's outputs as registers of kind "external" (memory the loop provides), one
    per output in order: the register an instruction wrote, or a copy of it where the
    value is not an instruction's own buffer (an input passed through, a constant, a
    view) or is an output twice. A fused group's stored member is written by the group's
    kernel straight into its external register where nothing else reads it (no copy).
    `shared`: (i, j) pairs of positions whose outputs are one node the loop keeps in one
    place: the second takes the first's register."""
    taken, out = set(), []
    same = {j: i for i, j in shared if outputs[i] is outputs[j]}
    rids = [None if pos in same else em.on(index[n], "cpu") for pos, n in enumerate(outputs)]
    moved = {}              # a member's view -> the external register its kernel writes
    for pos, n in enumerate(outputs):
        if pos in same:
            out.append(out[same[pos]])
            continue
        rid = rids[pos]
        r = em.regs[rid]
        if r.kind == "buffer" and not r.scratch and rid not in taken:
            r.kind, r.slot = "external", -1
        else:
            copy = em.reg(n.shape, n.dtype, "external")
            if rid in moved:
                em.emit("copy", [moved[rid]], copy, {}, n, note="loop output")
            elif _redirect(em, r, copy, [x for x in rids if x is not None and x != rid]):
                moved[rid] = copy.id
            else:
                em.emit("copy", [rid], copy, {}, n, note="loop output")
            rid = copy.id
        taken.add(rid)
        out.append(rid)
    return out


def _redirect(em, r, ext, others):
    """Let the instruction whose value holds view register r as some of its stored members
    (a fused group's) write those members straight into register ext, and the
    instructions reading r read ext instead: True when it can (r is exactly those members,
    and nothing else reads their places in the value, which then stay unwritten), False
    when r needs its copy."""
    if r.kind != "view" or r.shape != ext.shape or r.dtype != ext.dtype:
        return False
    base = r.base
    writer = next((ins for ins in em.instrs if ins.out == base), None)
    if writer is None or not writer.members or em.regs[base].kind != "buffer":
        return False
    tags = _member_tags(em, base, writer.members)
    places = _places(writer.members, r, tags[r.id])
    if places is None or any(q == m for q in places for m, _, _ in writer.redirect):
        return False
    readers = {rid for ins in em.instrs for rid in ins.ins if rid != r.id} | set(others)
    if any(_members_in(t) & set(places) for rid, t in tags.items() if rid in readers):
        return False
    for ins in em.instrs:
        if r.id in ins.ins:
            ins.ins = tuple(ext.id if i == r.id else i for i in ins.ins)
    writer.redirect = (*writer.redirect, *[(q, ext.id, index) for q, index in places.items()])
    return True


def _members_in(tag):
    return set(np.unique(tag).tolist()) - {-1}


def _places(index_of, r, tag):
    """{member: its basic index in view r} when r is exactly one member, or consecutive
    members side by side (the concat layout's columns, the stack layout's rows), else
    None. Checked against tag, r's view of the value's member numbers."""
    found = sorted(_members_in(tag))
    if not found or (tag == -1).any() or found != list(range(found[0], found[-1] + 1)):
        return None
    q0 = found[0]
    if len(found) == 1:
        return {q0: None} if r.view[1].get("index") == index_of[q0] else None
    first = index_of[q0]
    places = {}
    for q in found:
        if len(first) == 1 and first == (q0,):          # stacked: r's rows
            index = (q - q0,)
        else:                                           # side by side: r's columns
            width = first[-1].stop - first[-1].start
            index = first[:-1] + (slice((q - q0) * width, (q - q0 + 1) * width),)
        if not (tag[index] == q).all():
            return None
        places[q] = index
    return places


def _member_tags(em, base, index_of):
    """{register over base's value (base itself and every view of it, however deep): that
    view of an array holding each element's member number (-1: none)}."""
    tag = np.full(em.regs[base].shape, -1, np.int64)
    for q, index in enumerate(index_of):
        tag[index] = q
    tagged = {base: tag}
    found = True
    while found:
        found = False
        for v in em.regs:
            if v.kind == "view" and v.base in tagged and v.id not in tagged:
                tagged[v.id] = np.asarray(OPS[v.view[0]].impl(tagged[v.base], **v.view[1]))
                found = True
    return tagged
