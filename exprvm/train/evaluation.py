"""The step a Trainer builds from a model and a loss (ModelStep), and the Evaluator that
measures a model on another loader in evaluation mode."""
import numpy as np

from ..core import Graph, updates_of
from ..errors import UsageError
from ..machines import LispMachine
from ..tracing import Function, grad
from .extensions import WRITER, Extension

MACHINES = ("tape", "lisp")


class ModelStep:
    """The forward and backward pass of ``loss(model(*inputs), target)`` for a batch
    ``(*inputs, target)``; the model's parameters get their gradients (a solver given
    the model steps them).

    Parameters
    ----------
    model : ev.nn.Module
    loss : callable
        ``loss(output, target) -> scalar node`` (``ev.nn.mean_cross_entropy``, ``ev.nn.mse``).
    machine : {"tape", "lisp"}, default "tape"
        "tape": traced and compiled once per batch shape (``ev.function``), the state
        updates of the model's blocks (batch norm) written back after every run; "lisp":
        a fresh graph per batch on the LispMachine (which replays the structures it has
        met often), with the same updates.
    ctx : ev.distributed.Context, optional
        The machines average the gradients over its ranks.
    device : str, optional
        "cuda": the compiled step runs on a GPU ("tape" only).

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> net = ev.nn.Linear(3, 2, seed=0)
    >>> step = ev.train.ModelStep(net, ev.nn.mean_cross_entropy)
    >>> loss = step(np.ones((4, 3), np.float32), np.array([0, 1, 1, 0]))
    >>> net.params()[0].grad.shape
    (3, 2)
    """

    def __init__(self, model, loss, *, machine="tape", ctx=None, device=None):
        if not callable(getattr(model, "params", None)) or not callable(model):
            raise UsageError(f"ModelStep: model must be an ev.nn model, got {type(model).__name__}")
        if not callable(loss):
            raise UsageError(f"ModelStep: loss must be a function loss(output, target), got {loss!r}")
        if machine not in MACHINES:
            raise UsageError(f"ModelStep: machine must be one of {MACHINES}, got {machine!r}")
        if device is not None and machine != "tape":
            raise UsageError("ModelStep: device= compiles the step: use machine='tape'")
        self.model, self.loss, self.machine, self.ctx = model, loss, machine, ctx
        loss_fn = loss

        def train_step(model, *arrays):
            out = model(*arrays[:-1])
            cost = loss_fn(out, arrays[-1])
            grad(cost, model)
            return cost

        def eval_step(model, *arrays):
            out = model(*arrays[:-1])
            return loss_fn(out, arrays[-1]), out

        options = {} if device is None else {"device": device}
        self._train = Function(train_step, comm=ctx, **options)
        self._eval = Function(eval_step, **options)

    def __call__(self, *batch):
        """The batch's loss (a 0-d array); the parameters' ``.grad`` hold its gradients."""
        arrays = _arrays(batch)
        if self.machine == "tape":
            return self._train(self.model, *arrays)
        g, leaves, cost, _ = self._graph(arrays)
        return LispMachine(g, cost=cost, updates=updates_of(g), comm=self.ctx).run(dict(zip(leaves, arrays)))[0]

    def metrics(self, *batch):
        """{"loss": ..., "accuracy": ...} of a batch with the model as it is (no gradients);
        "accuracy" when the output is (batch, classes) and the target integer labels."""
        arrays = _arrays(batch)
        if self.machine == "tape":
            loss, out = self._eval(self.model, *arrays)
        else:
            g, leaves, cost, node = self._graph(arrays)
            loss, out = LispMachine(g, outputs=[cost, node]).run(dict(zip(leaves, arrays)))
        found = {"loss": float(loss)}
        target = arrays[-1]
        if out.ndim == 2 and target.shape == out.shape[:1] and target.dtype.kind in "iu":
            found["accuracy"] = float(np.mean(np.argmax(out, axis=1) == target))
        return found

    @property
    def programs(self):
        """{signature: Program} of the training step's compiled programs ("tape")."""
        return self._train.programs

    def _graph(self, arrays):
        g = Graph("train step")
        leaves = [g.tensor(f"input{i}", a.shape, a.dtype) for i, a in enumerate(arrays[:-1])]
        leaves.append(g.tensor("target", arrays[-1].shape, arrays[-1].dtype))
        out = self.model(*leaves[:-1])
        return g, leaves, self.loss(out, leaves[-1]), out

    def __repr__(self):
        return f"<ev.train.ModelStep: {getattr(self.loss, '__name__', self.loss)} of {self.model.name or 'model'}, {self.machine}>"


def _arrays(batch):
    if len(batch) < 2:
        raise UsageError(f"ModelStep: a batch is (inputs..., target); got {len(batch)} field(s)")
    return [np.asarray(a) for a in batch]


class Evaluator(Extension):
    """Measures the model on an evaluation loader, in evaluation mode, and adds the means
    to the trainer's observations as ``"<prefix>/<name>"`` (``"val/loss"``).

    Parameters
    ----------
    loader : iterable
        Batches of the evaluation set (one pass per call).
    fn : callable, optional
        ``fn(*batch)`` -> a number (the loss) or a dict of numbers, each a mean over the
        batch. Default: the trainer's model and loss (``ModelStep.metrics``: "loss", and
        "accuracy" for class labels).
    prefix : str, default "val"
    trigger : optional
        Default: after every epoch.
    model : ev.nn.Module, optional
        The model put in evaluation mode while it runs (default: the trainer's).

    Notes
    -----
    The means are weighted by each batch's length (its first field's). Under
    ``ev.distributed`` every rank measures its own loader (give it ``shard=ctx``, or
    the whole set) and the means are taken over all ranks' samples. The results of the
    last call are also in ``.result``.
    """

    trigger = (1, "epoch")
    priority = WRITER

    def __init__(self, loader, fn=None, *, prefix="val", trigger=None, model=None):
        if not hasattr(loader, "__iter__"):
            raise UsageError(f"Evaluator: the loader must be iterable, got {type(loader).__name__}")
        if fn is not None and not callable(fn):
            raise UsageError(f"Evaluator: fn must be callable, got {fn!r}")
        self.loader, self.fn, self.prefix, self.model = loader, fn, str(prefix), model
        if trigger is not None:
            self.trigger = trigger
        self.result = {}

    def __call__(self, trainer):
        fn = self.fn
        if fn is None:
            fn = getattr(trainer.step_fn, "metrics", None)
            if fn is None:
                raise UsageError("Evaluator: with a step function, give fn= (a function of an "
                                 "evaluation batch returning its numbers)")
        model = self.model if self.model is not None else trainer.model
        blocks = model.modules() if callable(getattr(model, "modules", None)) else []
        modes = [(b, b.training) for b in blocks]
        if model is not None:
            model.eval()
        try:
            totals, count = {}, 0
            for batch in self.loader:
                out = fn(*batch) if isinstance(batch, (tuple, list)) else fn(batch)
                n = len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)
                for k, v in (out.items() if isinstance(out, dict) else [("loss", out)]):
                    totals[k] = totals.get(k, 0.0) + float(np.asarray(v)) * n
                count += n
        finally:
            for b, mode in modes:
                b.training = mode
        if count == 0:
            raise UsageError("Evaluator: the evaluation loader gave no batch")
        keys = sorted(totals)
        sums = np.array([totals[k] for k in keys] + [count], np.float64)
        if trainer.ctx is not None:
            sums = np.atleast_1d(trainer.ctx.mean(sums))  # means of sums: their ratio is the same
        self.result = {f"{self.prefix}/{k}": float(s / sums[-1]) for k, s in zip(keys, sums[:-1])}
        trainer.observation.update(self.result)

    def __repr__(self):
        return f"Evaluator({self.prefix!r})"
