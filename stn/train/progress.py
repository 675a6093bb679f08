"""The progress of a training run: a live line on a terminal, one line per epoch in a log.

On a terminal (``stream.isatty()``), :class:`Progress` keeps one line
updated in place within each epoch, at most :data:`REFRESH_S` apart::

    epoch 3/20  step 120/430  2,310 img/s  loss 0.1234  acc 0.9612  ETA 0:25 epoch, 7:40 run

and clears it when the epoch ends, where the caller prints the epoch's
summary line (:meth:`Progress.epoch_text` gives its timing part). In a
log (not a terminal) nothing is written within an epoch: one line per
epoch. Images per second leave out the first step, which traces and
compiles the step function. The run's ETA counts the epochs still to
train at the pace of this one (training and validation), not the final
test evaluation.
"""

import sys
import time
from typing import Callable, TextIO

REFRESH_S = 0.25  # at most four updates a second


def clock_text(seconds: float) -> str:
    """``75.4 -> "1:15"``, ``3725 -> "1:02:05"``; ``"?"`` for a negative or unknown time."""
    if seconds is None or not seconds >= 0:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """The progress display of one training run.

    Args:
      epochs: the run's number of epochs.
      stream: where to write (default ``sys.stdout``); live only if it is a TTY.
      clock: seconds, monotonic (tests pass a fake one).
      verbose: 0 writes nothing.
    """

    def __init__(self, epochs: int, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, verbose: int = 1):
        self.epochs, self.clock, self.verbose = epochs, clock, verbose
        self.stream = stream or sys.stdout
        self.live = bool(verbose) and self.stream.isatty()
        self.epoch_seconds = []  # whole epochs (training + validation) of this process

    def start_epoch(self, epoch: int, steps: int) -> None:
        """Epoch ``epoch`` (0-based) of ``steps`` steps begins."""
        self.epoch, self.steps, self.began = epoch, steps, self.clock()
        self.first_step_end = None  # images/s are counted after the first step
        self.images_after_first = 0.0
        self.last_write = self.last_step_end = None
        self.width = 0

    def step(self, done: int, images: float, loss: float, accuracy: float) -> None:
        """``done`` steps of the epoch are finished; the last one had ``images`` images."""
        now = self.last_step_end = self.clock()
        if self.first_step_end is None:
            self.first_step_end = now
        else:
            self.images_after_first += images
        if not self.live or (self.last_write is not None and done < self.steps
                             and now - self.last_write < REFRESH_S):
            return
        self.last_write = now
        self._write(self.line(done, loss, accuracy, now))

    def images_per_second(self, now: float) -> float | None:
        elapsed = now - self.first_step_end if self.first_step_end is not None else 0.0
        return self.images_after_first / elapsed if elapsed > 0 else None

    def line(self, done: int, loss: float, accuracy: float, now: float) -> str:
        """The live line after ``done`` steps at time ``now``."""
        rate = self.images_per_second(now)
        elapsed = now - self.began
        epoch_eta = elapsed / done * (self.steps - done) if done else None
        per_epoch = (sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds
                     else elapsed / done * self.steps if done else None)
        left = self.epochs - self.epoch - 1
        run_eta = epoch_eta + left * per_epoch if epoch_eta is not None else None
        return (f"epoch {self.epoch + 1}/{self.epochs}  step {done}/{self.steps}  "
                f"{'?' if rate is None else f'{rate:,.0f}'} img/s  loss {loss:.4f}  "
                f"acc {accuracy:.4f}  ETA {clock_text(epoch_eta)} epoch, "
                f"{clock_text(run_eta)} run")

    def _write(self, text: str) -> None:
        # Pad over a longer previous line rather than rely on an ANSI clear.
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def end_epoch(self, seconds: float) -> str:
        """Clears the live line; returns the timing part of the epoch's summary line.

        ``seconds``: the whole epoch, training and validation.
        """
        self.epoch_seconds.append(seconds)
        if self.live and self.width:
            self._write("")
            self.stream.write("\r")
            self.stream.flush()
        rate = self.images_per_second(self.last_step_end) if self.last_step_end else None
        left = self.epochs - self.epoch - 1
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        speed = "" if rate is None else f", {rate:,.0f} img/s"
        eta = f", run ETA {clock_text(left * mean)}" if left else ""
        return f"{seconds:.1f} s{speed}{eta}"
