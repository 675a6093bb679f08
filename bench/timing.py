"""Timing helpers shared by the benchmarks: warm up, repeat, summarize."""

import dataclasses
import json
import subprocess
import sys
import tempfile
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


_PREFIX = "BENCH "  # marks the protocol's lines among whatever else a worker prints


def decline(reason: str) -> None:
    """Worker side: tells :func:`measure_in_processes` this worker cannot run, and why."""
    print(_PREFIX + json.dumps({"unavailable": reason}), flush=True)


def serve(label: str, contenders: dict[str, Callable[[], object]], warmup: int = 5,
          sync: Callable[[object], object] = lambda r: r) -> None:
    """Worker side of :func:`measure_in_processes`: times one call per request.

    Warms every contender up, announces ``label`` and their names, then
    answers each line ``<name>`` on stdin with the seconds of one call of
    that contender, until stdin closes. Each timed call follows an untimed
    one: the first call after another process ran pays for waking this
    one's threads and refilling the caches, which would fall on whichever
    contender is asked first.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            sync(fn())
    print(_PREFIX + json.dumps({"label": label, "names": list(contenders)}), flush=True)
    for line in sys.stdin:
        fn = contenders[line.strip()]
        sync(fn())
        start = time.perf_counter()
        sync(fn())
        print(_PREFIX + json.dumps(time.perf_counter() - start), flush=True)


class _Worker:
    """A process running ``python -m module *args``, which calls :func:`serve`."""

    def __init__(self, module: str, args: list[str]):
        self.command = f"python -m {module} {' '.join(args)}"
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen([sys.executable, "-m", module, *args], text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        hello = self._read()
        self.unavailable = hello.get("unavailable")
        self.label, self.names = hello.get("label"), hello.get("names", [])

    def _read(self):
        for line in self._proc.stdout:
            if line.startswith(_PREFIX):
                return json.loads(line[len(_PREFIX):])
        self._stderr.seek(0)
        raise RuntimeError(f"benchmark worker `{self.command}` failed:\n"
                           f"{self._stderr.read()[-3000:]}")

    def time(self, name: str) -> float:
        self._proc.stdin.write(name + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()
        self._stderr.close()


def measure_in_processes(module: str, workers: list[list[str]], repeats: int = 30
                         ) -> dict[str, dict]:
    """Times contenders living in separate processes, in alternation.

    Contenders that must not share a process (TensorFlow's and PyTorch's
    thread pools slow each other down: torch ran 10x slower here after TF
    had run in the same process) are still timed side by side: each round
    asks every worker, one at a time, for one timed call of each of its
    contenders, so a slow spell of the machine hits them all alike. Only
    one worker computes at any moment; the others wait on their stdin.

    Args:
      module: run as ``python -m module *args`` for each worker; it calls
        :func:`serve`, or :func:`decline` if its contenders are unavailable.
      workers: the argument lists, one worker each, started one after the
        other (each compiles and warms up alone).
      repeats: rounds.

    Returns:
      ``{" ".join(args): {"label": ..., "timings": {name: Timing}}}`` per
      worker, or ``{" ".join(args): {"unavailable": reason}}`` for one that
      declined.
    """
    started = {}
    try:
        for args in workers:
            started[" ".join(args)] = _Worker(module, args)
        times = {key: {name: [] for name in w.names} for key, w in started.items()}
        for _ in range(repeats):
            for key, worker in started.items():
                for name in worker.names:
                    times[key][name].append(worker.time(name))
    finally:
        for worker in started.values():
            worker.close()
    return {key: ({"unavailable": worker.unavailable} if worker.unavailable else
                  {"label": worker.label,
                   "timings": {name: _summary(t) for name, t in times[key].items()}})
            for key, worker in started.items()}


def contender_table(served: dict, contenders, case: str, paths: dict, reference: str,
                    width: int) -> dict:
    """Prints the forward and forward+backward rows of ``measure_in_processes``'s workers
    for one case, then each one's ratio to ``reference``; returns ``{contender: row}``.

    Args:
      served: ``measure_in_processes``'s answer, keyed ``"<contender> <case>"``.
      contenders: the contenders, in print order.
      case: the case's key part (a kind, a size).
      paths: contender -> the code path it times (printed beside its label).
      reference: the contender the ratios divide by (no ratios if it did not run).
      width: the label column's width.
    """
    rows = {}
    for contender in contenders:
        worker = served[f"{contender} {case}"]
        if "unavailable" in worker:
            print(f"{contender}: not run ({worker['unavailable']})")
            continue
        t = worker["timings"]
        print(f"{worker['label'] + ': ' + paths[contender]:{width}s} {t['forward']}   "
              f"{t['forward_backward']}")
        rows[contender] = {"label": worker["label"], "forward": t["forward"].median,
                           "forward_backward": t["forward_backward"].median}
    if reference in rows:
        for contender, row in rows.items():
            for part in ("forward", "forward_backward"):
                row[f"{part}_vs_{reference}"] = row[part] / rows[reference][part]
            print(f"{'ratio ' + contender + ' / ' + reference:{width}s} "
                  f"{row[f'forward_vs_{reference}']:8.2f}{'':26s}"
                  f"{row[f'forward_backward_vs_{reference}']:8.2f}")
    return rows
