"""Neural-network building blocks that own their parameters across graphs.

    model = ev.nn.StackedRNN("lstm", in_features=65, hidden=128, name="lstm", seed=0)
    head = ev.nn.Linear(128, 65, name="head", seed=1)

See module.py for how parameters bind to graphs, rnn.py for the gate layout, conv.py for
the convolutional blocks and the state (running statistics) machines update.
"""
import types as _types

from .module import Module, Param, Sequential  # noqa: F401
from .layers import Embedding, Linear, mean_cross_entropy, mse  # noqa: F401
from .rnn import CELLS, Cell, GRUCell, LSTMCell, RNNCell, StackedRNN, flat  # noqa: F401
from .conv import (  # noqa: F401
    AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, LayerNorm, MaxPool2d, State, set_training, state,
    trainable, updates)

# NOTE: this package only re-exports its blocks: every name imported here is public
__all__ = sorted(n for n, v in list(globals().items())
                 if not n.startswith("_") and not isinstance(v, _types.ModuleType))


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
