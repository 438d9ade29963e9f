"""Recurrent cells (tanh RNN, LSTM, GRU) and a multi-layer stack.

Layout (batch-major activations, h of shape (B, H)):

    W_x  (in, G*H)   input weights of all G gates side by side
    W_h  (H,  G*H)   recurrent weights, same column blocks
    b    (G*H,)      bias

so each step is ONE matmul per operand for all gates, ``x @ W_x + b + h @ W_h``,
followed by slices (getitem) of the (B, G*H) result. Column blocks:

    RNNCell   G=1  [h]                  h' = tanh(z)
    LSTMCell  G=4  [i, f, o | g]        c' = f*c + i*g,  h' = o*tanh(c')
                                        (one sigmoid over all of z; see recur)
    GRUCell   G=3  [z, r | n]           n = tanh(xn + r * hn),  h' = n + z*(h - n)
                                        (b_h (3H,) is added to h @ W_h: the
                                         candidate's recurrent bias sits inside r*(.))

Integer input to a cell is read as one-hot ids of size `in` (a row gather of W_x).
State is a tuple per cell: (h,) or, for the LSTM, (h, c). A state of None means zeros.
"""
import numpy as np

from ..train import init as _init
from ..errors import ExprError, ShapeError
from ..core import Node
from ..ops import concat, getitem, one_hot, reshape, scan, sigmoid, stack, tanh, where
from .layers import ONE_HOT_MAX_CLASSES, apply_matrix, is_ids
from .module import Module, draw_weight, graph_of, sub_seed


class Cell(Module):
    """Shared parameters and plumbing; subclasses define `gates`, `state_names`, `recur`."""

    gates = 1
    state_names = ("h",)
    kind = "cell"

    def __init__(self, in_features, hidden, name=None, dtype=np.float32, seed=None, init=None,
                 recurrent_init=None):
        super().__init__(name, self.kind)
        self.in_features, self.hidden = int(in_features), int(hidden)
        G, H = self.gates, self.hidden
        self.W_x = self.add_param("W_x", draw_weight(init or _init.glorot_uniform(), self.in_features,
                                                     H, dtype, sub_seed(seed, 0), blocks=G))
        self.W_h = self.add_param("W_h", draw_weight(recurrent_init or _init.glorot_uniform(), H, H,
                                                     dtype, sub_seed(seed, 1), blocks=G))
        self.b = self.add_param("b", self.initial_bias(dtype))

    def extra_repr(self):
        return f"{self.in_features} -> {self.hidden}"

    def initial_bias(self, dtype):
        """The bias ``b`` starts at zero for every gate."""
        return np.zeros(self.gates * self.hidden, dtype)

    @property
    def dtype(self):
        """The cell's dtype (its weights')."""
        return self.W_x.dtype

    # -- one step -----------------------------------------------------------------
    def project(self, x):
        """The input's share of the gates: x @ W_x + b, shape (..., G*H)."""
        g = graph_of(x, self.name)
        W, b = self.W_x.node(g), self.b.node(g)
        if is_ids(x):
            return self.project_one_hot(x)
        return apply_matrix(x, W, self.name) + b

    def project_one_hot(self, x):
        """project() for ids, or for rows known to be one-hot: x @ (W_x + b).

        A one-hot row sums to 1, so onehot @ W + b == onehot @ (W + b): the bias joins
        the table once per graph (hash-consing shares W + b across steps) instead of
        one add per step.
        """
        g = x.graph
        return apply_matrix(x, self.W_x.node(g) + self.b.node(g), self.name)

    def __call__(self, x, state=None):
        """One step: (h', state') from input x (B, in) (or ids (B,)) and state (or None)."""
        if type(self) in CELL_TYPES and type(x) is Node:
            return pinned(x.graph, self._step, x, state)
        return self._step(x, state)

    def _step(self, x, state):
        return self.recur(self.project(x), self._check_state(state))

    def recur(self, xp, state):
        """One step from the projected input ``xp`` (``project(x)``) and the state (None:
        zeros); returns ``(h, new state)``."""
        raise NotImplementedError

    def _check_state(self, state):
        if state is None:
            return None
        if isinstance(state, Node):
            state = (state,)
        state = tuple(state)
        if len(state) != len(self.state_names):
            raise ExprError(f"{self.name}: state must be {len(self.state_names)} node(s) "
                            f"{self.state_names}, got {len(state)}")
        for s, what in zip(state, self.state_names):
            if not isinstance(s, Node) or s.shape[-1:] != (self.hidden,):
                got = s.describe() if isinstance(s, Node) else type(s).__name__
                raise ShapeError(f"{self.name}: state {what} must be a node (..., {self.hidden}), got {got}")
        return state

    def _hW(self, h):
        return h @ self.W_h.node(h.graph)

    # -- state helpers --------------------------------------------------------------
    def zero_state(self, batch):
        """Numpy zeros to feed as the initial state."""
        return tuple(np.zeros((batch, self.hidden), self.dtype) for _ in self.state_names)

    def state_inputs(self, g, batch):
        """Input nodes for a fed initial state, named '<cell>.h0' (and '<cell>.c0')."""
        return tuple(g.tensor(f"{self.name}.{s}0", (batch, self.hidden), self.dtype)
                     for s in self.state_names)


def _cols(z, start, stop):
    return getitem(z, (Ellipsis, slice(start, stop)))


class RNNCell(Cell):
    """Elman RNN: h' = tanh(x @ W_x + h @ W_h + b)."""

    kind = "rnn"

    def recur(self, xp, state):
        """``h = tanh(xp + h_prev @ W_h)``; the state is ``(h,)``."""
        z = xp if state is None else xp + self._hW(state[0])
        h = tanh(z)
        return h, (h,)


class LSTMCell(Cell):
    """LSTM without peepholes; the forget-gate bias starts at `forget_bias` (1.0)."""

    gates = 4
    state_names = ("h", "c")
    kind = "lstm"

    def __init__(self, in_features, hidden, name=None, dtype=np.float32, seed=None, init=None,
                 recurrent_init=None, forget_bias=1.0):
        self.forget_bias = float(forget_bias)
        super().__init__(in_features, hidden, name, dtype, seed, init, recurrent_init)

    def initial_bias(self, dtype):
        """Zeros, with the forget gate's quarter at ``forget_bias`` (1.0 by default)."""
        b = np.zeros(4 * self.hidden, dtype)
        # NOTE: a forget gate open at the start lets gradients flow through c early on.
        b[self.hidden:2 * self.hidden] = self.forget_bias
        return b

    def recur(self, xp, state):
        """One LSTM step: gate columns i, f, o (sigmoid) then the candidate g (tanh);
        ``c = f * c_prev + i * g``, ``h = o * tanh(c)``; the state is ``(h, c)``."""
        H = self.hidden
        z = xp if state is None else xp + self._hW(state[0])
        # NOTE: the sigmoid covers all 4H columns, the candidate's unused: a column
        # slice is strided, and strided operands miss the compiled C kernels (a
        # sigmoid over a (32, 384) slice runs ~3x slower than one over contiguous z).
        s = sigmoid(z)
        cand = tanh(_cols(z, 3 * H, 4 * H))
        i, f, o = _cols(s, 0, H), _cols(s, H, 2 * H), _cols(s, 2 * H, 3 * H)
        c = i * cand if state is None else f * state[1] + i * cand
        h = o * tanh(c)
        return h, (h, c)


class GRUCell(Cell):
    """GRU with the reset gate applied after the recurrent matmul (as cuDNN does)."""

    gates = 3
    kind = "gru"

    def __init__(self, in_features, hidden, name=None, dtype=np.float32, seed=None, init=None,
                 recurrent_init=None):
        super().__init__(in_features, hidden, name, dtype, seed, init, recurrent_init)
        self.b_h = self.add_param("b_h", np.zeros(3 * self.hidden, dtype))

    def recur(self, xp, state):
        """One GRU step: gate columns z, r (sigmoid) then n = tanh(xp_n + r * (h_prev @ W_hn + b_hn));
        ``h = (1 - z) * n + z * h_prev``; the state is ``(h,)``."""
        H = self.hidden
        b_h = self.b_h.node(xp.graph)
        if state is None:
            h = None
            hz = b_h
        else:
            h = state[0]
            hz = self._hW(h) + b_h
        zr = sigmoid(_cols(xp, 0, 2 * H) + _cols(hz, 0, 2 * H))
        z, r = _cols(zr, 0, H), _cols(zr, H, 2 * H)
        n = tanh(_cols(xp, 2 * H, 3 * H) + r * _cols(hz, 2 * H, 3 * H))
        h_new = n - z * n if h is None else n + z * (h - n)
        return h_new, (h_new,)


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
CELL_TYPES = tuple(CELLS.values())


def pinned(g, build, *args):
    """build(*args) with the creation site of g's new nodes found once (Graph.pin_site),
    not probed per node: for steps of exprvm's own cells, which run no user code (a user's
    subclass may, and its nodes point at its own lines)."""
    outer = g.pin_site()
    try:
        return build(*args)
    finally:
        g.unpin_site(outer)


class StackedRNN(Module):
    """`layers` cells of one kind on top of each other; cell i is named '<name>.<i>'.

    State is a list with one tuple per layer (see Cell). `unroll` runs a whole
    sequence, one graph step per time step.
    """

    def __init__(self, cell, in_features, hidden, layers=1, name=None, dtype=np.float32, seed=None,
                 **cell_kw):
        cls = CELLS.get(cell, cell) if isinstance(cell, str) else cell
        if not (isinstance(cls, type) and issubclass(cls, Cell)):
            raise ExprError(f"StackedRNN: unknown cell {cell!r}; use one of {sorted(CELLS)} or a Cell class")
        if int(layers) < 1:
            raise ExprError(f"StackedRNN: layers must be >= 1, got {layers}")
        super().__init__(name, cls.kind)
        self.hidden = int(hidden)
        self.cells = [self.add(cls(in_features if i == 0 else hidden, hidden, name=f"{self.name}.{i}",
                                   dtype=dtype, seed=sub_seed(seed, i), **cell_kw))
                      for i in range(int(layers))]

    def extra_repr(self):
        return f"{len(self.cells)} layers"

    def __call__(self, x, state=None):
        """One time step through every layer: (top h, new state)."""
        if self._own_code() and type(x) is Node:
            return pinned(x.graph, self._step, self.cells, x, self._check_layers(state))
        return self._step(self.cells, x, self._check_layers(state))

    def _own_code(self):
        """Does a step of this stack run exprvm's code alone (not a user's subclass of the
        stack or of a cell), so that its nodes may share one creation site (pinned)?"""
        return type(self) is StackedRNN and all(type(c) in CELL_TYPES for c in self.cells)

    @staticmethod
    def _step(cells, x, state):
        new = []
        for cell, s in zip(cells, state):
            x, s = cell(x, s)
            new.append(s)
        return x, new

    def _check_layers(self, state):
        state = [None] * len(self.cells) if state is None else list(state)
        if len(state) != len(self.cells):
            raise ExprError(f"{self.name}: state has {len(state)} layers, the stack has {len(self.cells)}")
        return state

    def unroll(self, xs, state=None):
        """Run a sequence: xs is a list of per-step inputs or one node with time as axis 0.

        Returns (list of top-layer h per step, final state).
        """
        first = xs if isinstance(xs, Node) else xs[0] if isinstance(xs, (list, tuple)) and xs else None
        if self._own_code() and type(first) is Node:
            return pinned(first.graph, self._unroll, xs, state)
        return self._unroll(xs, state)

    def _unroll(self, xs, state):
        first = self.cells[0]
        hoist = isinstance(xs, Node) and is_ids(xs) and first.in_features <= ONE_HOT_MAX_CLASSES
        if hoist:
            # One one_hot op for the whole sequence; its per-step rows are views
            # (ids have no gradient, so no scatter comes back through them).
            xs = one_hot(xs, first.in_features, first.dtype)
        if isinstance(xs, Node):
            xs = [getitem(xs, (t,)) for t in range(xs.shape[0])]
        if not xs:
            raise ExprError(f"{self.name}.unroll: empty sequence")
        state = self._check_layers(state)
        hs = []
        for x in xs:
            if hoist:
                h, s0 = first.recur(first.project_one_hot(x), first._check_state(state[0]))
                h, rest = self._step(self.cells[1:], h, state[1:])
                state = [s0] + rest
            else:
                h, state = self(x, state)
            hs.append(h)
        return hs, state

    def sequence(self, xs, state=None, lengths=None, unroll=False, length=None):
        """Run a sequence with time as axis 0 of node xs ((T, B, in), or ids (T, B)): one
        ev.scan, compiled once whatever T (unroll=True: one graph step per time step, as
        unroll() builds).

        lengths: an integer node (B,): row b runs lengths[b] steps, then its state stays
        as it was (the final state is each row's own last) and its hs rows are zeros.
        length: how many steps run at all (an int, or an int64 scalar node fed at run
        time, at most T; ev.scan's length=): the hs rows past it are zeros.

        Returns (hs, final state): the top layer's h of every step, a (T, B, H) node.
        """
        if not isinstance(xs, Node) or xs.ndim < 2:
            raise ExprError(f"{self.name}.sequence: xs must be a node with time as axis 0 and rows "
                            f"as axis 1, got {xs.describe() if isinstance(xs, Node) else type(xs).__name__}")
        T, B = xs.shape[0], xs.shape[1]
        if lengths is not None and (not isinstance(lengths, Node) or lengths.shape != (B,)
                                    or lengths.dtype.kind not in "iu"):
            raise ShapeError(f"{self.name}.sequence: lengths must be an integer node ({B},), got "
                             f"{lengths.describe() if isinstance(lengths, Node) else type(lengths).__name__}")
        state = self._check_layers(state)
        g = xs.graph
        state = [c._check_state(s) if s is not None else
                 tuple(g.constant(np.zeros((B, c.hidden), c.dtype)) for _ in c.state_names)
                 for c, s in zip(self.cells, state)]
        if unroll:
            if isinstance(length, Node):
                raise ExprError(f"{self.name}.sequence: unroll=True needs a static length")
            if length is not None:
                xs = getitem(xs, (slice(0, int(length)),))
            if self._own_code():
                hs, final = pinned(g, self._unrolled_sequence, xs, state, lengths)
            else:
                hs, final = self._unrolled_sequence(xs, state, lengths)
            if length is not None and int(length) < T:
                hs = concat([hs, np.zeros((T - int(length),) + tuple(hs.shape[1:]), hs.dtype)])
            return hs, final
        cells, own = self.cells, self._own_code()

        def step(carry, x):
            if own:     # nodes of the loop's body graph
                return pinned(flat(carry)[0].graph, traced_step, carry, x)
            return traced_step(carry, x)

        def traced_step(carry, x):
            if lengths is None:
                h, new = self._step(cells, x, carry)
                return new, h
            x, t = x
            h, new = self._step(cells, x, carry)
            return _masked(t < lengths, h, new, carry)

        if lengths is None:
            final, hs = scan(step, state, xs, length=length)
        else:
            final, hs = scan(step, state, (xs, np.arange(T, dtype=lengths.dtype)), length=length)
        return hs, final

    def _unrolled_sequence(self, xs, state, lengths):
        hs = []
        for t in range(xs.shape[0]):
            h, new = self(getitem(xs, (t,)), state)
            if lengths is not None:
                new, h = _masked(lengths > t, h, new, state)
            state = new
            hs.append(h)
        return stack(hs), state

    def zero_state(self, batch):
        """Each layer's zero initial state (numpy arrays to feed), one entry per layer."""
        return [c.zero_state(batch) for c in self.cells]

    def state_inputs(self, g, batch):
        """Each layer's input nodes for a fed initial state, one entry per layer."""
        return [c.state_inputs(g, batch) for c in self.cells]

    @staticmethod
    def carry(inputs, state):
        """Feeds {state input node: copy of the final state's value} for the next run.

        NOTE: copies, so that the final state's buffers are not held into the next run
        (a held result buffer is left to its holder and the machine allocates another).
        """
        return {i: np.array(s.value, copy=True) for ins, ss in zip(inputs, state) for i, s in zip(ins, ss)}


def _masked(running, h, new, old):
    """The state of rows still running (a bool (B,)) from new, of the others from old; h of
    the others zeros. Returns (state, h)."""
    keep = reshape(running, (running.shape[0], 1))
    state = [tuple(where(keep, n, o) for n, o in zip(ns, os)) for ns, os in zip(new, old)]
    return state, where(keep, h, 0.0)


def flat(state):
    """The nodes of a stack's state as one flat list (for outputs=)."""
    return [n for layer in state for n in layer]
