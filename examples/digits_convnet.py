"""A small convnet learns scikit-learn's handwritten digits (1,797 real 8x8 images, no download).

    python examples/digits_convnet.py                 # at most 60 s; prints the test accuracy
    python examples/digits_convnet.py --machine lisp  # a fresh graph per batch on the LispMachine

(conv 3x3 - batch norm - ReLU - max pool 2) x 2, then a linear head: 8x8 -> 4x4 -> 2x2,
16 then 32 channels, 6,138 trained parameters. A fixed stratified split: 1,347 training images,
450 test images. ev.train.Trainer runs the model, the loss and Adam over a shuffled
DataLoader: batch norm on each batch's statistics, its running statistics written back
after every step; after every epoch an Evaluator measures the test set in evaluation
mode (batch norm on the running statistics). The last quarter of the epochs runs at a
tenth of the rate.

Writes OUT/digits_curves.png (training loss and test accuracy per epoch),
OUT/digits_confusion.png (the test confusion matrix) and OUT/digits_convnet.svg (the
network, constants hidden and each block's small ops folded into one box).
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NOTE: before numpy: small products, one thread each

import numpy as np  # noqa: E402

from common import draw_blocks, ev, plot_confusion  # noqa: E402

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
    a.epochs = min(a.epochs, 3) if a.smoke else a.epochs
    return a


def load(smoke, seed=0):
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) float32 in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(F32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=450, random_state=seed,
                                          stratify=d.target)
    return (xtr[:256], ytr[:256], xte[:100], yte[:100]) if smoke else (xtr, ytr, xte, yte)


def convnet(seed):
    # NOTE: no conv bias before batch norm: the normalization removes it (zero gradient).
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False, name="conv1", seed=seed), nn.BatchNorm2d(16, name="bn1"),
        ev.relu, nn.MaxPool2d(2, name="pool1"),
        nn.Conv2d(16, 32, 3, padding=1, bias=False, name="conv2", seed=seed + 1), nn.BatchNorm2d(32, name="bn2"),
        ev.relu, nn.MaxPool2d(2, name="pool2"),
        nn.Flatten(), nn.Linear(128, 10, name="head", seed=seed + 2), name="digits")


def main(argv=None):
    args = parse_args(argv)
    xtr, ytr, xte, yte = load(args.smoke, args.seed)
    model = convnet(args.seed)
    print(f"digits: {len(xtr)} training, {len(xte)} test images; model: {model.num_parameters():,} "
          f"parameters; machine: {args.machine}")
    train = ev.data.DataLoader(ev.data.ArrayDataset(xtr, ytr), args.batch, shuffle=True, seed=args.seed,
                               drop_last=True)
    trainer = ev.train.Trainer(train, model=model, loss=nn.mean_cross_entropy, machine=args.machine,
                               optimizer=ev.solvers.Adam(model, lr=args.lr), epochs=args.epochs)
    trainer.extend(ev.train.LRSchedule(ev.schedules.StepDecay(args.lr, max(1, int(args.epochs * 0.75))), unit="epochs"))
    trainer.extend(ev.train.Evaluator(ev.data.DataLoader(ev.data.ArrayDataset(xte, yte), len(xte)), prefix="test"))
    log = trainer.extend(ev.train.LogReport(
        print="epoch {epoch} loss {loss:.4f} test accuracy {test/accuracy:.4f} ({elapsed:.1f} s)"))
    trainer.extend(lambda t: t.elapsed > args.seconds and t.stop(), trigger=(1, "epoch"), name="deadline")
    if args.out:
        trainer.extend(ev.train.PlotReport([["loss"], ["test/accuracy"]], os.path.join(args.out, "digits_curves.png"),
                                           x="epoch", yscale=["log", None], title="digits convnet"))
    trainer.extend(ev.train.ProgressBar())
    trainer.run()
    losses = [e["loss"] for e in log.log]
    print(f"test accuracy {trainer.observation['test/accuracy']:.4f} after {trainer.epoch} epochs, "
          f"{trainer.elapsed:.1f} s of training")
    print(f"loss first {losses[0]:.4f} last {losses[-1]:.4f}")
    if args.out:
        predict = ev.function(lambda model, x: model(x))
        pred = predict(model.eval(), xte).argmax(axis=1)
        plot_confusion(os.path.join(args.out, "digits_confusion.png"), yte, pred)
        g = ev.Graph("digits convnet")
        draw_blocks(os.path.join(args.out, "digits_convnet.svg"), convnet(args.seed).train(),
                    g.tensor("x", (2, 1, 8, 8), F32),
                    lambda h: nn.mean_cross_entropy(h, g.tensor("t", (2,), np.int64)),
                    "digits convnet: (conv-bn-relu-pool) x 2, linear head")
        print(f"wrote {args.out}/digits_curves.png, digits_confusion.png, digits_convnet.svg")


if __name__ == "__main__":
    main()
