"""Timing shared by the benchmarks: medians over repeated calls."""
import statistics
import time


def median_ms(fn, rounds, inner, warmup=3, sync=None):
    """Milliseconds a call of fn takes: the median over `rounds` of the mean of `inner`
    back-to-back calls, after `warmup` calls. sync (a GPU's synchronize) is called after
    the warm-up and after each round, so that a round times finished work."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times) * 1e3


def median_s(fn, repeat):
    """Seconds one call of fn takes: the median of `repeat` calls (no warm-up: a compile,
    a first run)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
