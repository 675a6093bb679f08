"""The training progress display (stn.train.progress): live on a terminal, quiet in a log.

A fake stream says whether it is a terminal and a fake clock sets the
time: no assertion depends on the wall clock.
"""

import io

import pytest

from stn.train import progress


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (75.4, "1:15"), (3725, "1:02:05"),
                                           (-1, "?"), (None, "?"), (float("nan"), "?")])
def test_clock_text(seconds, text):
    assert progress.clock_text(seconds) == text


def epoch_of(shown, clock, epoch, steps=40, step_s=0.1, batch=50):
    """Runs one fake epoch: the first step takes 2 s (tracing), the others ``step_s``."""
    shown.start_epoch(epoch, steps)
    for done in range(1, steps + 1):
        clock.now += 2.0 if done == 1 else step_s
        shown.step(done, batch, 1.0 / done, 0.5)
    clock.now += 1.0  # validation
    return shown.end_epoch(clock.now - shown.began)


def test_terminal_line_is_updated_in_place_at_most_four_times_a_second():
    stream, clock = Stream(tty=True), Clock()
    shown = progress.Progress(3, stream, clock)
    summary = epoch_of(shown, clock, 0)
    updates = stream.getvalue().split("\r")[1:]
    # 40 steps over 2 + 3.9 s: the first, then one per 0.25 s, the last, and the clearing.
    assert 10 <= len(updates) <= 2 + 3.9 / progress.REFRESH_S + 2
    assert "\n" not in stream.getvalue()
    last = [u for u in updates if u.strip()][-1].strip()
    # 39 steps of 50 images in 3.9 s after the first: 500 img/s.
    # The run's ETA: 2 more epochs at this one's 5.9 s of training (no whole epoch yet).
    assert last == "epoch 1/3  step 40/40  500 img/s  loss 0.0250  acc 0.5000  ETA 0:00 epoch, " \
                   "0:12 run"
    assert updates[-1].strip() == ""  # cleared for the epoch's summary line
    assert summary == "6.9 s, 500 img/s, run ETA 0:14"  # 2 more epochs of 6.9 s


def test_run_eta_uses_the_epochs_already_done():
    stream, clock = Stream(tty=True), Clock()
    shown = progress.Progress(4, stream, clock)
    epoch_of(shown, clock, 0)  # 6.9 s in all
    shown.start_epoch(1, 40)
    clock.now += 2.0
    shown.step(1, 50, 1.0, 0.5)
    clock.now += 1.0
    shown.step(20, 50, 1.0, 0.5)
    line = stream.getvalue().split("\r")[-1]
    # 20 of 40 steps in 3 s: 3 s left in this epoch, then 2 epochs of 6.9 s.
    assert "ETA 0:03 epoch, 0:17 run" in line


def test_a_log_gets_nothing_within_an_epoch():
    stream, clock = Stream(tty=False), Clock()
    shown = progress.Progress(2, stream, clock)
    assert epoch_of(shown, clock, 0) == "6.9 s, 500 img/s, run ETA 0:07"
    assert epoch_of(shown, clock, 1) == "6.9 s, 500 img/s"  # the last epoch: no ETA
    assert stream.getvalue() == ""


def test_silent_when_not_verbose():
    stream, clock = Stream(tty=True), Clock()
    epoch_of(progress.Progress(2, stream, clock, verbose=0), clock, 0)
    assert stream.getvalue() == ""
