"""Convolutional blocks: Conv2d, MaxPool2d, AvgPool2d, BatchNorm2d, LayerNorm, Flatten,
Dropout, named and laid out as torch.nn (NCHW activations, OIHW weights).

State. BatchNorm2d's running mean and variance are `State` parameters: saved and
loaded with the model (stable names, "bn1.running_mean"), never trained. A block
in training mode registers, per graph, the new values of its state as nodes;
``ev.nn.updates(model, g)`` collects them for a machine, which writes them into
the state's arrays at the end of every run:

    model = ev.nn.Sequential(ev.nn.Conv2d(1, 8, 3, padding=1, name="c1"),
                             ev.nn.BatchNorm2d(8, name="bn1"), ev.relu, ...)
    logits = model(x)                                   # training mode: batch statistics
    cost = ev.nn.mean_cross_entropy(logits, t)
    params = ev.nn.trainable(model)                     # what a solver steps
    ev.grad(cost, [p.node(g) for p in params])
    m = ev.TapeMachine(g, updates=ev.nn.updates(model, g))

    ev.nn.set_training(model, False)                    # evaluation mode, for new graphs
    probs = ev.softmax(model(x_eval))                   # the running statistics, read only

Both graphs read the same arrays, so the evaluation graph (or machine) sees the
trained weights and the running statistics as they are after the last training run.
"""

import math

import numpy as np

from ..core import register_update, updates_of
from ..errors import ExprError, ShapeError
from ..ops import (avg_pool2d, batch_norm, batch_norm_update, conv2d, dropout, layer_norm, max_pool2d,
                   reshape)
from ..ops.conv import ints
from ..train import init as _init
from .module import Module, Param, draw, graph_of, sub_seed


class State(Param):
    """A parameter that holds state (running statistics): checkpointed, never trained."""

    __slots__ = ()
    trainable = False


def trainable(model):
    """The model's Params a solver should step (every Param but State)."""
    return [p for p in model.params() if not isinstance(p, State)]


def state(model):
    """The model's State parameters (running statistics)."""
    return [p for p in model.params() if isinstance(p, State)]


def updates(model, g):
    """{state node: new value node} of every block of the model applied in graph g in
    training mode: the `updates=` of a TapeMachine or LispMachine over g."""
    out = {}
    for block in model.modules():
        if hasattr(block, "updates") and callable(block.updates):
            out.update(block.updates(g))
    return out


def set_training(model, training=True):
    """Put every block of the model that behaves differently in training (BatchNorm2d,
    Dropout) in training or evaluation mode for the graphs built from now on; returns model
    (model.train(training), the method form)."""
    return model.train(training)


class Conv2d(Module):
    """y = conv2d(x, W, b, stride, padding, dilation, groups): x (N, in, H, W), W of shape
    (out_channels, in_channels / groups, kh, kw), b (out_channels,). He-uniform weights
    (ReLU nets) unless init= is given; zero bias."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, name=None, dtype=np.float32, seed=None, init=None, bias_init=None):
        super().__init__(name, "conv")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ExprError(f"{self.name}: groups={groups} must divide in_channels={in_channels} "
                            f"and out_channels={out_channels}")
        self.kernel_size = ints(kernel_size, 2, "kernel_size", self.name)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = self.add_param("weight", draw(init or _init.he_uniform(), shape, dtype, sub_seed(seed, 0)))
        self.bias = None
        if bias:
            self.bias = self.add_param("bias", draw(bias_init or _init.zeros(), (self.out_channels,), dtype,
                                                    sub_seed(seed, 1)))

    def extra_repr(self):
        return (f"{self.in_channels} -> {self.out_channels}, kernel {self.kernel_size}, stride {self.stride}, "
                f"padding {self.padding}" + ("" if self.bias is not None else ", no bias"))

    def __call__(self, x):
        g = graph_of(x, self.name)
        b = None if self.bias is None else self.bias.node(g)
        return conv2d(x, self.weight.node(g), b, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, groups=self.groups)


class _Pool(Module):
    fn = None

    def __init__(self, kernel_size, stride=None, padding=0, name=None, default="pool"):
        super().__init__(name, default)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def extra_repr(self):
        return f"kernel {self.kernel_size}, stride {self.stride or self.kernel_size}, padding {self.padding}"

    def __call__(self, x):
        graph_of(x, self.name)
        return type(self).fn(x, self.kernel_size, self.stride, self.padding)


class MaxPool2d(_Pool):
    """max_pool2d(x, kernel_size, stride (default kernel_size), padding)."""
    fn = staticmethod(max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, name=None):
        super().__init__(kernel_size, stride, padding, name, "maxpool")


class AvgPool2d(_Pool):
    """avg_pool2d(x, kernel_size, stride (default kernel_size), padding), zero padding counted."""
    fn = staticmethod(avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, name=None):
        super().__init__(kernel_size, stride, padding, name, "avgpool")


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...): dims start_dim..end_dim merged into one."""

    def __init__(self, start_dim=1, end_dim=-1, name=None):
        super().__init__(name, "flatten")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def extra_repr(self):
        return f"dims {self.start_dim}..{self.end_dim}"

    def __call__(self, x):
        graph_of(x, self.name)
        nd = x.ndim
        for d in (self.start_dim, self.end_dim):
            if not -nd <= d < nd:       # NOTE: never wrapped silently (numpy's rule for axes)
                raise ShapeError(f"{self.name}: dim {d} is out of range for {x.describe()}")
        a, b = self.start_dim % nd, self.end_dim % nd
        if a > b:
            raise ExprError(f"{self.name}: start_dim {self.start_dim} is after end_dim {self.end_dim} "
                            f"for {x.describe()}")
        merged = math.prod(x.shape[a:b + 1])
        return reshape(x, x.shape[:a] + (merged,) + x.shape[b + 1:])


class Dropout(Module):
    """Inverted dropout with rate p in training mode, the identity in evaluation mode.
    Every graph the block is applied in draws its own mask stream (seeded from `seed`,
    so a run sequence is reproducible); a compiled graph draws a new mask every run."""

    def __init__(self, p=0.5, seed=None, name=None):
        super().__init__(name, "dropout")
        if not 0.0 <= p < 1.0:
            raise ExprError(f"{self.name}: p must be in [0, 1), got {p}")
        self.p, self.training = float(p), True
        self._seeds = np.random.default_rng(seed)

    def extra_repr(self):
        return f"p={self.p}" + ("" if self.training else ", eval")

    def __call__(self, x, train=None):
        graph_of(x, self.name)
        train = self.training if train is None else train
        return dropout(x, self.p, seed=int(self._seeds.integers(2**62)), train=train) if train else x


class BatchNorm2d(Module):
    """Per-channel batch normalization of NCHW x, as torch.nn.BatchNorm2d.

    Training mode (``bn(x)`` after set_training(model, True), the default, or
    ``bn(x, train=True)``): normalizes with the batch's statistics and registers, for
    x's graph, new running statistics by torch's rule (momentum, unbiased batch
    variance); ``bn.updates(g)`` returns them as {state node: new value node}.
    Evaluation mode: normalizes with the running statistics. weight and bias
    (affine=True) are trained; running_mean and running_var are State.
    NOTE: applied twice in one graph in training mode, the later call's update wins.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, name=None, dtype=np.float32):
        super().__init__(name, "bn")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.training = True
        c = self.num_features
        self.weight = self.add_param("weight", np.ones(c, dtype)) if affine else None
        self.bias = self.add_param("bias", np.zeros(c, dtype)) if affine else None
        self.running_mean = self._add_state("running_mean", np.zeros(c, dtype))
        self.running_var = self._add_state("running_var", np.ones(c, dtype))

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
                + ("" if self.training else ", eval"))

    def _add_state(self, local, value):
        s = State(f"{self._prefix()}{local}", value)
        self._entries.append(s)
        return s

    def __call__(self, x, train=None):
        g = graph_of(x, self.name)
        train = self.training if train is None else train
        rm, rv = self.running_mean.node(g), self.running_var.node(g)
        w = None if self.weight is None else self.weight.node(g)
        b = None if self.bias is None else self.bias.node(g)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ExprError(f"{self.name}: expected NCHW input with {self.num_features} channels, "
                            f"got {x.describe()}")
        y = batch_norm(x, rm, rv, w, b, training=train, momentum=self.momentum, eps=self.eps)
        if train:
            # NOTE: registered for the graph (core/updates.py), where a machine made for a
            # traced graph (ev.function, ev.train) finds them
            new_m, new_v = batch_norm_update(x, rm, rv, self.momentum)
            register_update(rm, new_m)
            register_update(rv, new_v)
        return y

    def updates(self, g):
        """{running_mean node: its new value node, running_var node: ...} for graph g, or {}."""
        mine = {id(self.running_mean.node_in(g)), id(self.running_var.node_in(g))}
        return {s: n for s, n in updates_of(g).items() if id(s) in mine}


class LayerNorm(Module):
    """layer_norm over the trailing dims normalized_shape, with a learned per-element
    scale (ones) and shift (zeros) when elementwise_affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, name=None, dtype=np.float32):
        super().__init__(name, "ln")
        ns = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        self.normalized_shape, self.eps = tuple(int(d) for d in ns), float(eps)
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = self.add_param("weight", np.ones(self.normalized_shape, dtype))
            self.bias = self.add_param("bias", np.zeros(self.normalized_shape, dtype))

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"

    def __call__(self, x):
        g = graph_of(x, self.name)
        w = None if self.weight is None else self.weight.node(g)
        b = None if self.bias is None else self.bias.node(g)
        return layer_norm(x, self.normalized_shape, w, b, self.eps)
