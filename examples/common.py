"""What the examples share: their text (the Python standard library's own source, so the
char-RNN trains with no download), a vocabulary, where a step runs (CPU, GPU, or the GPU
code on the CPU's host twin), and the figures that are not training curves."""
import contextlib
import os
import sys
import sysconfig

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402

DEFAULT_CHARS = 1_000_000


def stdlib_corpus(limit=DEFAULT_CHARS):
    """About `limit` characters of the standard library's top-level .py files, sorted by
    name (the same Python version always gives the same text)."""
    root = sysconfig.get_paths()["stdlib"]
    try:
        names = sorted(n for n in os.listdir(root) if n.endswith(".py"))
    except OSError as e:
        raise SystemExit(f"cannot list the standard library at {root}: {e}; pass --text FILE")
    parts, total = [], 0
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
        total += len(parts[-1])
        if total >= limit:
            break
    corpus = "".join(parts)[:limit]
    if len(corpus) < 10_000:
        raise SystemExit(f"the standard library at {root} has too little source; pass --text FILE")
    return corpus


def load_text(path=None):
    """(text, description): the file at `path`, or the stdlib corpus when path is None."""
    if path is None:
        text = stdlib_corpus()
        return text, f"Python {sysconfig.get_python_version()} stdlib source ({len(text):,} chars)"
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return text, f"{path} ({len(text):,} chars)"


class Vocab:
    """The sorted set of characters of a text; ids are positions in it."""

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        return np.fromiter((self.index[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def codes(self):
        """The characters as code points (for a checkpoint, which stores arrays)."""
        return np.array([ord(c) for c in self.chars], dtype=np.int64)


def on_device(device):
    """(the machines' device= for --device cpu|cuda|twin, the block to run them in): twin
    runs the CUDA code compiled for the CPU (slow; a check of the device program)."""
    if device == "twin":
        from exprvm.device import twin
        return "cuda", twin.use()
    return (None if device == "cpu" else device), contextlib.nullcontext()


def to_host(device):
    """After a run on a device: the parameters' host arrays get their device values."""
    if device is not None:
        from exprvm.train import device as device_params
        device_params.to_host()


def plot_confusion(path, y, pred, classes=10):
    """The confusion matrix of labels y against predictions, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.zeros((classes, classes), np.int64)
    np.add.at(cm, (y, pred), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for i, j in np.ndindex(classes, classes):
        if cm[i, j]:
            ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(classes), yticks=range(classes),
           title=f"test confusion ({(y == pred).mean():.1%} right)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_blocks(path, model, x, cost_fn, title):
    """The model applied to input node x, each block's auxiliary ops (reshapes, bias adds,
    the running-statistics updates) folded into one box per block, as an SVG."""
    g, h, block = x.graph, x, {}
    for f in model.layers:
        start = len(g.nodes)
        h = f(h)
        name = getattr(f, "name", getattr(f, "__name__", "f"))
        main = {n.id for n in g.nodes[start:] if n.op in ("conv2d", "batch_norm", "max_pool2d", "relu", "matmul")}
        block.update((n.id, name) for n in g.nodes[start:] if not n.is_leaf and n.id not in main)
    try:
        ev.render(g, path, root=cost_fn(h), constants=False, collapse=lambda n: block.get(n.id), title=title)
    except ev.ExprError as e:     # e.g. graphviz's dot missing
        print(f"could not draw the network: {e}")
