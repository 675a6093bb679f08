"""Timing helpers shared by the benchmarks: warm up, repeat, summarize."""

import dataclasses
import json
import subprocess
import sys
import time
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls: median and interquartile range."""

    median: float
    q25: float
    q75: float
    repeats: int

    def __str__(self) -> str:
        return (f"{self.median * 1e3:8.2f} ms  "
                f"(IQR {self.q25 * 1e3:.2f}-{self.q75 * 1e3:.2f}, n={self.repeats})")


def measure(fn: Callable[[], object], repeats: int = 30, warmup: int = 5,
            sync: Callable[[object], object] = lambda r: r) -> Timing:
    """Times ``fn()`` after ``warmup`` calls (compilation, caches).

    Args:
      fn: the work to time; its result is passed to ``sync``.
      repeats: timed calls.
      warmup: untimed calls first.
      sync: forces the result to be computed (e.g. ``.numpy()``), so
        asynchronous execution is not mistaken for speed.
    """
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return _summary(times)


def measure_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 30,
                        warmup: int = 5, sync: Callable[[object], object] = lambda r: r
                        ) -> dict[str, Timing]:
    """Times several contenders in alternation, one call of each per round.

    A slow spell of the machine then slows every contender alike, so the
    ratios between them stay honest even when the absolute times drift.
    Arguments as for :func:`measure`; returns one :class:`Timing` per key.
    """
    for fn in fns.values():
        for _ in range(warmup):
            sync(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            sync(fn())
            times[name].append(time.perf_counter() - start)
    return {name: _summary(t) for name, t in times.items()}


def _summary(times: list[float]) -> Timing:
    q25, median, q75 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), len(times))


def to_numpy(result):
    """Sync for TensorFlow results (a tensor, or a tuple of tensors)."""
    if isinstance(result, (tuple, list)):
        return [to_numpy(r) for r in result]
    return result.numpy() if hasattr(result, "numpy") else result


def run_isolated(module: str, kind: str, repeats: int) -> dict:
    """Runs ``python -m module kind repeats`` and returns its JSON result.

    Used to time each contender in a fresh process (see bench.sampler).
    """
    proc = subprocess.run([sys.executable, "-m", module, kind, str(repeats)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {module} {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_main(worker) -> None:
    """Entry point of a worker process: ``worker(kind, repeats)`` -> JSON."""
    kind, repeats = sys.argv[1], int(sys.argv[2])
    print(json.dumps(worker(kind, repeats)))
