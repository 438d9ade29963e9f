"""Rendering with the real graphviz `dot`: graphs, gradients and programs drawn to
SVG, parsed back as XML and checked for colours, edges, counts and text."""
import os
import re
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import exprvm as ev
from exprvm.compiler import Instr, Program, Register
from exprvm.render.text import abbrev

SVG = "{http://www.w3.org/2000/svg}"
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- reading SVG back ------------------------------------------------------------

def parse(svg_text):
    return ET.fromstring(svg_text)


def draw(obj, **options):
    return parse(ev.to_dot(obj, **options).pipe(format="svg", encoding="utf-8"))


def groups(svg, cls):
    """{title: <g>} for the nodes, edges or clusters of a drawing."""
    return {g.find(f"{SVG}title").text: g for g in svg.iter(f"{SVG}g") if g.get("class") == cls}


def shape(g):
    """The first outline (polygon, path or ellipse) of a node or cluster."""
    for e in g.iter():
        if e.tag in (f"{SVG}polygon", f"{SVG}path", f"{SVG}ellipse"):
            return e
    raise AssertionError("no shape")


def texts(g):
    return [t.text for t in g.iter(f"{SVG}text")]


def all_texts(svg):
    return texts(svg)


def dashed_edges(svg):
    return [g for g in groups(svg, "edge").values()
            if any(p.get("stroke-dasharray") for p in g.iter(f"{SVG}path"))]


def box(g):
    """Bounding box (xmin, ymin, xmax, ymax) of a node's or cluster's outline."""
    e = shape(g)
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", e.get("points") or e.get("d"))]
    xs, ys = nums[0::2], nums[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def node_of(svg, node):
    return groups(svg, "node")[f"n{node.id}"]


# -- graphs used below -------------------------------------------------------------

def square():
    g = ev.Graph("square")
    x = g.scalar("x")
    y = x * x
    dx = ev.grad(y, x)
    return g, x, y, dx


def run(g, cost, feeds):
    for node, value in feeds.items():       # bound, so that the drawing shows them
        ev.let(node, value)
    ev.LispMachine(g, cost=cost).run()
    ev.LispMachine(g, outputs=list(g.grads.values())).run()


def rnn(steps):
    g = ev.Graph("rnn")
    W = g.matrix("W", (4, 4), init=ev.init.glorot_normal(seed=0))
    U = g.matrix("U", (4, 3), init=ev.init.glorot_normal(seed=1))
    h = g.vector("h0", 4)
    xs = [g.vector(f"x{t}", 3) for t in range(steps)]
    for x in xs:
        h = ev.tanh(W @ h + U @ x)
    cost = ev.sum(h * h)
    gW, gU = ev.grad(cost, [W, U])
    return g, W, U, cost, gW, gU


# -- Gorgonia's conventions ----------------------------------------------------------

def test_square_colours_clusters_and_gradient_edge():
    g, x, y, dx = square()
    svg = draw(g)
    nodes = groups(svg, "node")
    assert len(nodes) == len(g.nodes) == 5
    assert shape(node_of(svg, y)).get("stroke") == "red"
    assert shape(node_of(svg, x)).get("stroke") == "green"
    assert shape(node_of(svg, x)).get("fill") == "lightyellow"
    # the only dashed edge runs from dx to x
    dashed = dashed_edges(svg)
    assert len(dashed) == 1
    assert dashed[0].find(f"{SVG}title").text == f"n{dx.id}->n{x.id}"
    # every gradient node lies inside the gradients cluster, forward nodes outside it
    cx0, cy0, cx1, cy1 = box(groups(svg, "cluster")["cluster_gradients"])
    for n in g.nodes:
        x0, y0, x1, y1 = box(node_of(svg, n))
        inside = cx0 <= x0 and x1 <= cx1 and cy0 <= y0 and y1 <= cy1
        assert inside == (n.role == "grad"), n


def test_gradient_sits_level_with_its_node_and_forward_grows_upwards():
    g, W, U, cost, gW, gU = rnn(2)
    svg = draw(g)
    centre = lambda n: (box(node_of(svg, n))[1] + box(node_of(svg, n))[3]) / 2  # noqa: E731
    assert centre(gW) == pytest.approx(centre(W))
    assert centre(gU) == pytest.approx(centre(U))
    # SVG y grows downwards: the cost is drawn above its leaves
    assert centre(cost) < centre(W)


def test_params_green_without_fill_and_constants_grey():
    g = ev.Graph()
    w = g.vector("w", 3, value=np.arange(3.0))
    c = g.constant(np.arange(3.0) + 0.5)
    y = ev.sum(w * c)
    svg = draw(g)
    assert shape(node_of(svg, w)).get("stroke") == "green"
    assert shape(node_of(svg, w)).get("fill") == "none"
    const = node_of(svg, c)
    assert shape(const).get("stroke") not in ("green", "red", "black")
    assert "[0.5 1.5 2.5]" in texts(const)
    assert shape(node_of(svg, y)).get("stroke") == "red"


def test_dashed_edges_count_the_gradients_shown():
    g, W, U, cost, gW, gU = rnn(3)
    shown = [n for n in g.nodes if n.grad_of is not None]
    assert len(dashed_edges(draw(g))) == len(shown) == 2
    # drawing the subgraph of one gradient shows one gradient and one dashed edge
    assert len(dashed_edges(draw([gW, W]))) == 1
    assert len(dashed_edges(draw(g, gradients=False))) == 0


def test_values_and_gradients_appear_after_a_run():
    g, x, y, dx = square()
    before = all_texts(draw(g))
    assert not any(t.startswith(("value", "grad ")) for t in before)
    run(g, y, {x: 3.0})
    after = draw(g)
    assert "value 9" in texts(node_of(after, y))
    assert "value 3" in texts(node_of(after, x)) and "grad 6" in texts(node_of(after, x))
    assert "value 6" in texts(node_of(after, dx))
    assert not any(t.startswith("value") for t in all_texts(draw(g, values=False)))


def test_root_is_the_cost_or_the_sinks_or_the_callers_choice():
    g = ev.Graph()
    a = g.scalar("a")
    s, t = ev.exp(a), ev.sin(a)
    svg = draw(g)
    assert {shape(node_of(svg, n)).get("stroke") for n in (s, t)} == {"red"}
    svg = draw(g, root=s)
    assert shape(node_of(svg, s)).get("stroke") == "red"
    assert shape(node_of(svg, t)).get("stroke") != "red"
    # after ev.grad the cost is the root even though gradient nodes are sinks too
    ev.grad(s, a)
    svg = draw(g)
    reds = [k for k, n in groups(svg, "node").items() if shape(n).get("stroke") == "red"]
    assert reds == [f"n{s.id}"]


def test_list_of_nodes_draws_their_subgraph_only():
    g = ev.Graph()
    a, b = g.scalar("a"), g.scalar("b")
    y1 = ev.exp(a)
    y2 = ev.tanh(b) * 2.0
    svg = draw([y1])
    assert set(groups(svg, "node")) == {f"n{a.id}", f"n{y1.id}"}
    assert set(groups(draw(y2), "node")) == {f"n{n.id}" for n in ev.ancestors([y2])}


# -- escaping -------------------------------------------------------------------------

NASTY = ['<b>', 'a&b', 'q"uote', 'back\\slash', 'end\\', '\\n', '\\"', '<x>&"\\', '&amp;',
         '\\N', '{a|b}', '<<i>html</i>>']


def test_names_with_markup_quotes_and_backslashes_survive():
    g = ev.Graph()
    leaves = [g.scalar(n) for n in NASTY]
    total = leaves[0]
    for n in leaves[1:]:
        total = total + n
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # graphviz warns on strings it would mangle
        svg = draw(g, title='title <&> "\\"')
    for n in leaves:
        assert n.name in texts(node_of(svg, n)), n.name
    assert 'title <&> "\\"' in all_texts(svg)
    # tooltips carry the creation site, escaped the same way
    tips = [a.get("{http://www.w3.org/1999/xlink}title") for a in svg.iter(f"{SVG}a")]
    assert any(t and t.startswith('<x>&"\\ ') for t in tips)


def test_name_with_a_line_break_becomes_two_lines():
    g = ev.Graph()
    x = g.scalar("two\nlines")
    svg = draw(g)
    assert texts(node_of(svg, x))[:2] == ["two", "lines"]


# -- rendering only reads -----------------------------------------------------------

def snapshot(g):
    fields = ("id", "op", "opdef", "inputs", "params", "shape", "dtype", "name", "site",
              "weak", "role", "grad_of")
    nodes = []
    for n in g.nodes:
        row = [getattr(n, f) for f in fields]
        for arr in (n.value, n.grad):
            row.append(None if arr is None else (id(arr), arr.copy(), arr.flags.writeable))
        nodes.append(row)
    return nodes, dict(g.grads), dict(g.costs), dict(g._cse)


def same(a, b):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a is b or a == b


def test_rendering_never_mutates_the_graph(tmp_path):
    g, W, U, cost, gW, gU = rnn(4)
    run(g, cost, {n: np.ones(n.shape) for n in g.inputs()})
    before = snapshot(g)
    for options in ({}, {"collapse": "site"}, {"around": [W], "depth": 2}, {"constants": False},
                    {"gradients": False}, {"root": [gW]}):
        ev.to_dot(g, **options).pipe(format="svg")
    ev.render([gW, gU], tmp_path / "g.svg")
    g._repr_svg_()
    assert same(before, snapshot(g))


# -- large graphs ---------------------------------------------------------------------

def test_around_keeps_the_neighbourhood_and_counts_what_is_cut():
    g, W, U, cost, gW, gU = rnn(5)
    full = groups(draw(g), "node")
    svg = draw(g, around=[W], depth=1)
    readers = [n for n in g.nodes if W in n.inputs]
    expect = {W.id, gW.id} | {n.id for n in readers}
    assert set(groups(svg, "node")) == {f"n{i}" for i in expect}
    assert len(full) > len(expect)
    # a reader of W whose other operand was cut says so
    assert any("not shown" in t for t in texts(node_of(svg, readers[0])))
    assert len(groups(draw(g, around=[W], depth=0), "node")) == 1
    wider = groups(draw(g, around=[W], depth=3), "node")
    assert len(expect) < len(wider) < len(full)


def test_collapse_folds_an_unrolled_rnn_to_one_step():
    g6, g25 = rnn(6)[0], rnn(25)[0]
    full = len(g25.nodes)  # drawn unfolded, every node is shown (not drawn here: dot takes seconds)
    folded6 = draw(g6, collapse="site")
    folded25 = draw(g25, collapse="site")
    assert len(groups(folded25, "node")) == len(groups(folded6, "node")) < full / 5
    text = all_texts(folded25)
    assert "x0 … x24 ×25" in text
    assert "tanh ×25" in text
    assert "repeated ×25" in text
    # the costs and the gradients ev.grad returned are never folded
    assert len(dashed_edges(folded25)) == 2


def test_collapse_by_pattern_or_by_key_function():
    g, *_ = rnn(8)
    n = len(groups(draw(g), "node"))
    by_name = draw(g, collapse=r"x\d+")
    assert len(groups(by_name, "node")) == n - 7
    assert "x0 … x7 ×8" in all_texts(by_name)
    by_op = draw(g, collapse=lambda node: node.op if node.op == "tanh" else None)
    assert len(groups(by_op, "node")) == n - 7
    with pytest.raises(ev.ExprError, match="collapse= takes 'site', a regular expression or a function node -> key, not int"):
        ev.to_dot(g, collapse=3)


def test_hiding_constants():
    g, x, y, dx = square()
    z = y * 2.5 + 1.0
    consts = [n for n in g.nodes if n.op == "const"]
    shown = groups(draw(g), "node")
    svg = draw(g, constants=False)
    assert len(groups(svg, "node")) == len(shown) - len(consts)
    assert not any(f"n{c.id}" in groups(svg, "node") for c in consts)
    assert "with const 2.5" in texts(node_of(svg, z.inputs[0]))


def test_bad_arguments_raise_typed_errors(tmp_path):
    g, x, y, dx = square()
    other = ev.Graph().scalar("other")
    with pytest.raises(ev.ExprError, match="around"):
        ev.to_dot(g, around=[other])
    with pytest.raises(ev.ExprError, match="root"):
        ev.to_dot(g, root=other)
    with pytest.raises(ev.ExprError, match="cannot draw"):
        ev.to_dot(42)
    with pytest.raises(ev.ExprError, match="different graphs"):
        ev.to_dot([x, other])
    with pytest.raises(ev.ExprError, match="format"):
        ev.render(g, tmp_path / "g.jpeg2000")


# -- compiled programs ------------------------------------------------------------------

def compiled():
    g = ev.Graph()
    W = g.matrix("W", (4, 3), init=ev.init.glorot_normal(seed=0))
    b = g.vector("b", 4, init=ev.init.zeros())
    x = g.vector("x", 3)
    y = ev.tanh(W @ x + b)
    cost = ev.sum(y * y)
    ev.grad(cost, [W, b])
    return ev.TapeMachine(g).program


def test_program_draws_each_instruction_and_each_read():
    prog = compiled()
    svg = draw(prog)
    nodes = groups(svg, "node")
    instrs = [nodes[f"i{k}"] for k in range(len(prog.instrs))]
    assert len(instrs) == len(prog.instrs)
    read = {prog.root(i).id for ins in prog.instrs for i in ins.ins}
    leaves = {f"r{r.id}" for r in prog.registers if r.id in read and r.kind in ("input", "param", "const")}
    assert set(nodes) == leaves | {f"i{k}" for k in range(len(prog.instrs))}
    # one edge per register read, from its writer (or its leaf) to the reader
    edges = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == sum(len(ins.ins) for ins in prog.instrs)
    for k, ins in enumerate(prog.instrs):
        assert f"{k}: {ins.text()}" in texts(instrs[k])
        red = shape(instrs[k]).get("stroke") == "red"
        assert red == (ins.out in prog.outputs)
    for w, rid in prog.grads:
        k = next(k for k, ins in enumerate(prog.instrs) if ins.out == rid)
        assert f"gradient of {w.label}" in texts(instrs[k])


def test_program_colours_buffers_by_slot_and_marks_reuse():
    prog = compiled()
    svg = draw(prog)
    fill = {}
    reused = 0
    holder = {}
    for k, ins in enumerate(prog.instrs):
        out = prog.registers[ins.out]
        fill.setdefault(out.slot, set()).add(shape(groups(svg, "node")[f"i{k}"]).get("fill"))
        in_place = any(prog.root(i).kind == "buffer" and prog.root(i).slot == out.slot for i in ins.ins)
        if not in_place and holder.get(out.slot, out.id) != out.id:
            reused += 1
        holder[out.slot] = out.id
    assert all(len(f) == 1 for f in fill.values())
    assert len({f.pop() for f in fill.values()}) == len(fill)
    assert reused > 0
    assert sum(t.startswith("reuses slot") for t in all_texts(svg)) == reused


def test_program_transfers_and_views_are_drawn_distinctly():
    f64 = np.dtype(np.float64)
    regs = [Register(0, (3,), f64, "input"), Register(1, (3,), f64, "buffer", slot=0),
            Register(2, (3,), f64, "buffer", slot=1, device="cuda"),
            Register(3, (3,), f64, "buffer", slot=2, device="cuda"),
            Register(4, (3,), f64, "buffer", slot=0),
            Register(5, (1, 3), f64, "view", base=4, view=("reshape", {"shape": (1, 3)})),
            Register(6, (), f64, "buffer", slot=1)]
    instrs = [Instr("tanh", (0,), 1), Instr("to_device", (1,), 2), Instr("exp", (2,), 3, kernel="cuda"),
              Instr("to_host", (3,), 4), Instr("sum", (5,), 6)]
    prog = Program(regs, instrs, [24, 24, 24], [6], 48)
    assert prog.verify()
    svg = draw(prog)
    nodes = groups(svg, "node")
    purple = {k for k, g in nodes.items() if shape(g).get("stroke") == "purple"}
    assert purple == {"i1", "i3"}
    assert "r5 = reshape of r4" in all_texts(svg)
    assert "float64 (3,) on cuda, slot 1" in texts(nodes["i1"])
    with pytest.raises(ev.ExprError, match="collapse"):
        ev.to_dot(prog, collapse="site")


# -- files and Jupyter --------------------------------------------------------------------

@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"),
                                           (".pdf", b"%PDF"), (".dot", b"digraph")])
def test_render_writes_the_format_of_the_suffix(tmp_path, suffix, magic):
    g, *_ = square()
    path = tmp_path / f"square{suffix}"
    assert ev.render(g, path) == str(path)
    assert path.read_bytes().startswith(magic)


def test_render_format_argument_overrides_the_suffix(tmp_path):
    g, x, y, dx = square()
    path = ev.render(g, tmp_path / "square.out", format="svg")
    assert path == str(tmp_path / "square.out") and os.listdir(tmp_path) == ["square.out"]
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<?xml")
    svg, want = parse(text), draw(g)
    # the drawing of the graph itself: its nodes, the cost outlined red, the one dashed
    # gradient edge from dx to x, the same labels as the drawing made in memory
    assert set(groups(svg, "node")) == set(groups(want, "node")) and len(groups(svg, "node")) == 5
    assert shape(node_of(svg, y)).get("stroke") == "red"
    assert [e.find(f"{SVG}title").text for e in dashed_edges(svg)] == [f"n{dx.id}->n{x.id}"]
    assert sorted(all_texts(svg)) == sorted(all_texts(want)) and "x" in all_texts(svg)


def test_repr_svg_for_jupyter():
    g, *_ = square()
    svg = parse(g._repr_svg_())
    assert len(groups(svg, "node")) == 5
    prog = compiled()
    assert len(groups(parse(prog._repr_svg_()), "node")) > len(prog.instrs)


def test_abbreviations():
    assert abbrev(np.float64(3.14159265)) == "3.142"
    assert abbrev(np.array(7)) == "7"
    assert abbrev(np.array([1.0, 2.5, -3.0])) == "[1 2.5 -3]"
    big = np.linspace(-1.0, 5.0, 100)
    assert abbrev(big) == "[-1 -0.9394 -0.8788 …] min -1 max 5"
    with_nan = np.r_[np.nan, np.inf, np.arange(10.0)]
    assert abbrev(with_nan) == "[nan inf 0 …] min 0 max 9 1 NaN 1 Inf"
    assert abbrev(np.array([True, False] * 5)).endswith("5 true")

    class OnDevice:  # what a device array offers: a shape, no host copy
        shape = (4, 3)
    assert abbrev(OnDevice()) == "OnDevice (4, 3)"


# -- the example ---------------------------------------------------------------------------

def test_example_writes_parseable_svgs(tmp_path):
    out = tmp_path / "svgs"
    proc = subprocess.run([sys.executable, os.path.join(ROOT_DIR, "examples", "render_gradients.py"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = sorted(os.listdir(out))
    assert {"square.svg", "rnn_step.svg", "rnn_step_w.svg", "rnn_unrolled.svg", "program.svg"} <= set(files)
    for name in files:
        svg = parse((out / name).read_text(encoding="utf-8"))
        assert groups(svg, "node"), name
    square_svg = parse((out / "square.svg").read_text(encoding="utf-8"))
    text = all_texts(square_svg)
    assert "value 9" in text and "grad 6" in text
    assert len(dashed_edges(square_svg)) == 1


def _chain(n):
    g = ev.Graph()
    x = g.vector("x", 4)
    y = x
    for _ in range(n):
        y = ev.tanh(y * x)
    return g, ev.sum(y)


def test_big_drawings_get_the_fast_layout_small_ones_the_full():
    from exprvm.render import FAST_ABOVE, FAST_LAYOUT
    small = ev.to_dot(_chain(5)[0])
    assert "splines" not in small.graph_attr
    g, _ = _chain(FAST_ABOVE // 2 + 10)           # two edges a link: past FAST_ABOVE
    big = ev.to_dot(g)
    assert sum("->" in line for line in big.body) > FAST_ABOVE
    assert all(big.graph_attr[k] == v for k, v in FAST_LAYOUT.items())
    assert "splines" not in ev.to_dot(g, layout="full").graph_attr
    assert ev.to_dot(_chain(5)[0], layout="fast").graph_attr["splines"] == "line"
    with pytest.raises(ev.ExprError, match="layout must be"):
        ev.to_dot(g, layout="quick")


def test_the_fast_layout_renders(tmp_path):
    # dot accepts the attributes and draws every node (a small graph: the layout of a
    # really big one takes seconds even so)
    g, _ = _chain(30)
    svg = parse(open(ev.render(g, tmp_path / "fast.svg", layout="fast")).read())
    assert len(groups(svg, "node")) == len(ev.to_dot(g).body) - sum("->" in line for line in ev.to_dot(g).body)
