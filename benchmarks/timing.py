"""Timing shared by the benchmarks: the median over rounds of a call's mean time."""
import statistics
import time


def median_ms(fn, rounds, inner, warmup=3):
    """Milliseconds a call of fn takes: the median over `rounds` of the mean of `inner`
    back-to-back calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times) * 1e3
