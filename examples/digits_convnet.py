"""A small convnet learns scikit-learn's handwritten digits (1,797 real 8x8 images, no download).

    python examples/digits_convnet.py                 # at most 60 s; prints the test accuracy
    python examples/digits_convnet.py --machine lisp  # a fresh graph per batch on the LispMachine

(conv 3x3 - batch norm - ReLU - max pool 2) x 2, then a linear head: 8x8 -> 4x4 -> 2x2,
16 then 32 channels, 6,138 trained parameters. A fixed stratified split: 1,347 training images,
450 test images. Training runs one compiled graph (a batch of --batch images, batch
norm on the batch's statistics, its running statistics written back after every run
through the machine's updates=); the test set runs through a second graph built in
evaluation mode over the same parameters (batch norm on the running statistics).

Writes OUT/digits_curves.png (training loss and test accuracy per epoch),
OUT/digits_confusion.png (the test confusion matrix) and OUT/digits_convnet.svg (the
network, constants hidden and each block's small ops folded into one box).
"""
import argparse
import os
import sys
import time

# NOTE: set before numpy loads: the products here are small, and a second BLAS thread
# spinning on a shared core slows every step.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402

nn = ev.nn
F32 = np.float32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0, help="stop after the epoch that passes this")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--machine", choices=["tape", "lisp"], default="tape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out", help="folder for the PNGs and the SVG ('' for none)")
    p.add_argument("--smoke", action="store_true", help="a part of the data and 3 epochs, for tests")
    a = p.parse_args(argv)
    if a.smoke:
        a.epochs = min(a.epochs, 3)
    return a


def load(smoke, seed=0):
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) float32 in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(F32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=450, random_state=seed,
                                          stratify=d.target)
    if smoke:
        xtr, ytr, xte, yte = xtr[:256], ytr[:256], xte[:100], yte[:100]
    return xtr, ytr, xte, yte


def convnet(seed):
    # NOTE: no conv bias before batch norm: the normalization removes it (zero gradient).
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False, name="conv1", seed=seed), nn.BatchNorm2d(16, name="bn1"),
        ev.relu, nn.MaxPool2d(2, name="pool1"),
        nn.Conv2d(16, 32, 3, padding=1, bias=False, name="conv2", seed=seed + 1), nn.BatchNorm2d(32, name="bn2"),
        ev.relu, nn.MaxPool2d(2, name="pool2"),
        nn.Flatten(), nn.Linear(128, 10, name="head", seed=seed + 2), name="digits")


class Trainer:
    """One training step on a batch: a compiled graph (tape) or a fresh graph (lisp)."""

    def __init__(self, model, machine, batch, lr):
        self.model, self.machine = model, machine
        self.opt = ev.solvers.Adam(lr=lr)
        self.params = nn.trainable(model)
        if machine == "tape":
            g = self.graph = ev.Graph("digits train")
            self.x, self.t = g.tensor("x", (batch, 1, 8, 8), F32), g.tensor("t", (batch,), np.int64)
            self.cost = nn.mean_cross_entropy(model(self.x), self.t)
            self.nodes = [p.node(g) for p in self.params]
            ev.grad(self.cost, self.nodes)
            self.m = ev.TapeMachine(g, outputs=[self.cost], updates=nn.updates(model, g))

    def step(self, xb, tb):
        if self.machine == "tape":
            self.m.run({self.x: xb, self.t: tb})
            self.opt.step(self.nodes)
            return float(self.cost.value)
        g = ev.Graph("digits batch")
        cost = nn.mean_cross_entropy(self.model(g.tensor("x", xb.shape, F32, value=xb)), g.constant(tb))
        ev.LispMachine(g, cost=cost, updates=nn.updates(self.model, g)).run()
        for p in self.params:
            p.grad = p.node(g).grad
        self.opt.step(self.params)
        return float(cost.value)


class Evaluator:
    """Predicted classes of a fixed set of images, through a graph in evaluation mode."""

    def __init__(self, model, images):
        nn.set_training(model, False)
        g = ev.Graph("digits eval")
        self.x = g.tensor("x", images.shape, F32)
        self.logits = model(self.x)
        nn.set_training(model, True)
        self.m = ev.TapeMachine(g, outputs=[self.logits])
        self.images = images

    def predict(self):
        self.m.run({self.x: self.images})
        return self.logits.value.argmax(axis=1)


def plot_curves(path, losses, accs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = np.arange(1, len(losses) + 1)
    a1.plot(epochs, losses, "o-", ms=3)
    a1.set(xlabel="epoch", ylabel="mean training loss (nats)", yscale="log", title="training loss")
    a2.plot(epochs, 100 * np.asarray(accs), "o-", ms=3, color="C2")
    a2.axhline(98, color="0.6", lw=0.8, ls="--")
    a2.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy", ylim=(max(0, 100 * min(accs) - 2), 100))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(path, y, pred):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.zeros((10, 10), np.int64)
    np.add.at(cm, (y, pred), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for i, j in np.ndindex(10, 10):
        if cm[i, j]:
            ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title=f"test confusion ({(y == pred).mean():.1%} right)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_network(path, seed):
    """The network on a batch of 2 in training mode; each block's auxiliary ops (reshapes,
    bias adds, the running-statistics updates) fold into one box per block."""
    model = convnet(seed)
    g = ev.Graph("digits convnet")
    h = g.tensor("x", (2, 1, 8, 8), F32)
    block = {}
    for f in model.layers:
        start = len(g.nodes)
        h = f(h)
        name = getattr(f, "name", getattr(f, "__name__", "f"))
        main = {n.id for n in g.nodes[start:] if n.op in ("conv2d", "batch_norm", "max_pool2d", "relu", "matmul")}
        for n in g.nodes[start:]:
            if not n.is_leaf and n.id not in main:
                block[n.id] = name
    cost = nn.mean_cross_entropy(h, g.tensor("t", (2,), np.int64))
    ev.render(g, path, root=cost, constants=False, collapse=lambda n: block.get(n.id),
              title="digits convnet: (conv-bn-relu-pool) x 2, linear head")


def main(argv=None):
    from tqdm import tqdm

    args = parse_args(argv)
    ev.init.seed(args.seed)
    xtr, ytr, xte, yte = load(args.smoke, args.seed)
    model = convnet(args.seed)
    print(f"digits: {len(xtr)} training, {len(xte)} test images; model: {model.num_parameters():,} "
          f"parameters; machine: {args.machine}")
    t0 = time.perf_counter()
    trainer = Trainer(model, args.machine, args.batch, args.lr)
    test = Evaluator(model, xte)
    print(f"compiled in {time.perf_counter() - t0:.2f} s")
    rng = np.random.default_rng(args.seed)
    steps = len(xtr) // args.batch
    losses, accs = [], []
    start = time.perf_counter()
    bar = tqdm(total=args.epochs * steps, unit="step", mininterval=1.0, file=sys.stderr, dynamic_ncols=True)
    for epoch in range(1, args.epochs + 1):
        if epoch == int(args.epochs * 0.75) + 1:
            trainer.opt.lr = args.lr / 10          # the last quarter at a tenth of the rate
        order = rng.permutation(len(xtr))
        total = 0.0
        for k in range(steps):
            idx = order[k * args.batch:(k + 1) * args.batch]
            total += trainer.step(xtr[idx], ytr[idx])
            bar.update(1)
        losses.append(total / steps)
        accs.append(float((test.predict() == yte).mean()))
        elapsed = time.perf_counter() - start
        bar.write(f"epoch {epoch} loss {losses[-1]:.4f} test accuracy {accs[-1]:.4f} ({elapsed:.1f} s)")
        if elapsed > args.seconds:
            break
    bar.close()
    elapsed = time.perf_counter() - start
    pred = test.predict()
    print(f"test accuracy {(pred == yte).mean():.4f} after {len(losses)} epochs, {elapsed:.1f} s of training")
    print(f"loss first {losses[0]:.4f} last {losses[-1]:.4f}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        plot_curves(os.path.join(args.out, "digits_curves.png"), losses, accs)
        plot_confusion(os.path.join(args.out, "digits_confusion.png"), yte, pred)
        try:
            render_network(os.path.join(args.out, "digits_convnet.svg"), args.seed)
        except ev.ExprError as e:     # e.g. graphviz's dot missing
            print(f"could not draw the network: {e}")
        print(f"wrote {args.out}/digits_curves.png, digits_confusion.png, digits_convnet.svg")


if __name__ == "__main__":
    main()
