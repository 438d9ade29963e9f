"""ev.data: datasets and the DataLoader that batches them for a training loop.

In: arrays in memory (:class:`ArrayDataset`), an encoded text (:class:`TextStreams`), or
any object with ``__len__`` and ``__getitem__``. Out: numpy batches, one epoch per
iteration of a :class:`DataLoader`, made ahead on a background thread, reshuffled every
epoch from a seed, and cut into disjoint parts per rank under ``ev.distributed``.

    loader = ev.data.DataLoader(ev.data.ArrayDataset(X, Y), batch_size=32, shuffle=True, seed=0)
    for epoch in range(10):
        for xb, yb in loader:
            m.run({x: xb, t: yb})
"""
from .datasets import ArrayDataset, TextStreams
from .loader import DataLoader, default_collate

__all__ = ["ArrayDataset", "DataLoader", "TextStreams", "default_collate"]
