"""Rows of the loops and branches: one instruction holding its bodies' Programs.

A loop instruction's kernel is its nested Programs (Lowered.bodies) and a description
of how to run them (Lowered.meta); machines/loops.py binds and runs it. Its scratch
registers are the loop's own memory, planned with the enclosing program's: two buffers
per carry (the carry a step reads and the one it writes, swapped every step) and, per
summed y, the step's contribution before it is added.
"""
from ..ir import packed_layout
from .table import Lowered, lowers


def _outputs(results):
    offsets, _ = packed_layout(results)
    return [(off, tuple(shape), dt) for off, (shape, dt) in zip(offsets, results)]


@lowers("scan")
def _scan(req):
    p = req.params
    body = p["body"]
    n_carry, n_x = p["n_carry"], p["n_x"]
    carries = [(leaf.shape, leaf.dtype) for leaf in body.inputs[:n_carry]]
    summed = [(o.shape, o.dtype) for o, s in zip(body.outputs[n_carry:], p["summed"]) if s]
    meta = dict(kind="scan", n_carry=n_carry, n_x=n_x, n_cap=len(body.inputs) - n_carry - n_x,
                rows=p["rows"], steps=p["steps"], reverse=p["reverse"], summed=p["summed"],
                outputs=_outputs(p["results"]), bodies=(body.name,),
                tag=("rev " if p["reverse"] else "") + (str(p["steps"]) if p["steps"] is not None
                                                         else f"<={p['rows']}"))
    return Lowered(None, tmps=tuple(carries) * 2 + tuple(summed), kernel="loop", name="scan",
                   bodies=(p["program"],), meta=meta)


@lowers("while_loop")
def _while(req):
    p = req.params
    body, cond = p["body"], p["cond"]
    n_carry = p["n_carry"]
    carries = [(leaf.shape, leaf.dtype) for leaf in body.inputs[:n_carry]]
    it = p["max_iterations"]
    meta = dict(kind="while", n_carry=n_carry, n_cap_cond=len(cond.inputs) - n_carry,
                max_iterations=it, n_stack=len(body.outputs) - n_carry,
                outputs=_outputs(p["results"]), bodies=(cond.name, body.name),
                tag="" if it is None else f"<={it}")
    return Lowered(None, tmps=tuple(carries) * 2, kernel="loop", name="while",
                   bodies=tuple(p["programs"]), meta=meta)


@lowers("cond")
def _cond(req):
    p = req.params
    meta = dict(kind="cond", n_ops=p["n_ops"], outputs=_outputs(p["results"]),
                bodies=(f"true: {p['true'].name}", f"false: {p['false'].name}"), tag="")
    return Lowered(None, kernel="loop", name="cond", bodies=tuple(p["programs"]), meta=meta)
