"""Datasets: what a DataLoader reads. Any object with ``__len__`` and ``__getitem__``
is one; these two cover arrays in memory and a text read as parallel streams."""
import numpy as np

from ..errors import ExprError, IndexRangeError, ShapeError


class ArrayDataset:
    """Rows of equally long arrays; sample ``i`` is the tuple of every array's row ``i``.

    Parameters
    ----------
    *arrays : array_like
        One or more arrays with the same length along axis 0 (inputs, targets, ...).

    Raises
    ------
    ShapeError
        If no array is given, an array is 0-d, or the lengths differ.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ds = ev.data.ArrayDataset(np.arange(6.0).reshape(3, 2), np.array([0, 1, 1]))
    >>> len(ds), ds[2]
    (3, (array([4., 5.]), np.int64(1)))
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ShapeError("ArrayDataset: give at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        for k, a in enumerate(self.arrays):
            if a.ndim == 0:
                raise ShapeError(f"ArrayDataset: array {k} is a scalar; every array needs rows (axis 0)")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) > 1:
            raise ShapeError(f"ArrayDataset: the arrays' lengths along axis 0 differ: {lengths}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)

    def take(self, indices):
        """The batch of rows ``indices`` (an int array): a tuple of one new array per field,
        what the default collate makes of those samples, in one gather per array."""
        return tuple(a[indices] for a in self.arrays)

    def __repr__(self):
        fields = ", ".join(f"{a.shape[1:]} {a.dtype}" for a in self.arrays)
        return f"<ev.data.ArrayDataset of {len(self)} rows: {fields}>"


class TextStreams:
    """An encoded text cut into ``batch`` contiguous streams, read ``seq`` steps at a time.

    Item ``i`` is ``(inputs, targets)``, two time-major ``(seq, batch)`` arrays: window
    ``i`` of every stream, and the same characters one step later. Column ``b`` of item
    ``i + 1`` continues column ``b`` of item ``i``, so the final hidden state of one
    batch is the right initial state of the next (truncated backpropagation through
    time); a new epoch starts every stream again at the beginning (item 0). Items are
    whole batches: read them with ``DataLoader(streams, batch_size=None)``, in order
    (the loader refuses ``shuffle=True`` for this dataset).

    Parameters
    ----------
    ids : array_like of int
        The text as a 1-d array of token ids.
    batch : int
        Number of parallel streams (the batch size).
    seq : int
        Steps per window (the unroll length).
    shard : ev.distributed.Context, optional
        Under data-parallel training: this rank reads its own contiguous part of the
        text, every part of the same length, so every rank has as many items.

    Raises
    ------
    ShapeError
        If the text (or this rank's part) is too short to fill ``batch`` streams of
        ``seq + 1`` tokens, or ``ids`` is not 1-d.
    """

    ordered = True      # the items must be read in order: the DataLoader refuses to shuffle them

    def __init__(self, ids, batch, seq, shard=None):
        data = np.asarray(ids)
        if data.ndim != 1 or data.dtype.kind not in "iu":
            raise ShapeError(f"TextStreams: ids must be a 1-d integer array, got {data.shape} {data.dtype}")
        batch, seq = _positive_int("batch", batch), _positive_int("seq", seq)
        if shard is not None:
            part = (len(data) - 1) // shard.size
            data = data[shard.rank * part:(shard.rank + 1) * part + 1]
        length = (len(data) - 1) // batch
        if length < seq:
            where = "" if shard is None else f" (rank {shard.rank}'s part of {shard.size})"
            raise ShapeError(f"TextStreams: {len(data)} tokens{where} cannot fill {batch} streams of "
                             f"{seq + 1} tokens; use a longer text or a smaller batch or seq")
        usable = batch * length
        self.x = np.ascontiguousarray(data[:usable].reshape(batch, length).T)          # (L, B)
        self.y = np.ascontiguousarray(data[1:usable + 1].reshape(batch, length).T)
        self.batch, self.seq = batch, seq

    def __len__(self):
        return len(self.x) // self.seq

    def __getitem__(self, i):
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexRangeError(f"TextStreams: window {i} is outside the {n} windows")
        i %= n
        s = slice(i * self.seq, (i + 1) * self.seq)
        return self.x[s].copy(), self.y[s].copy()

    def __repr__(self):
        return f"<ev.data.TextStreams: {self.batch} streams, {len(self)} windows of {self.seq}>"


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ExprError(f"{name} must be a positive int, got {v!r}")
    return int(v)
