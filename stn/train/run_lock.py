"""One writer per run directory: the lock a training run holds for its whole life.

``train.py`` (and every experiment that trains through
:func:`stn.train.training.train_and_evaluate`) holds an exclusive
``fcntl.flock`` on ``RUN/.writer.lock`` while it trains, and writes into
that file who holds it (pid, host, start time, command) for the message a
second writer gets. A second process on the same run directory is refused
at once (:class:`RunBusy`) rather than training the same epochs beside the
first, which would leave each file to whichever wrote it last.

The kernel releases the lock when its process ends, however it ends: a
lock file left by a ``kill -9`` is not held, and the next run takes it
over without a word. ``evaluate.py`` only looks (:func:`check_not_training`):
it refuses a run that is being trained, and never blocks one.

On a platform without ``fcntl`` (Windows) the lock is not taken.
"""

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from stn.train.runs import LOCK, RunError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None


class RunBusy(RunError):
    """Another live process is training the run directory; the message names it."""


def _describe(run_dir: Path, holder: dict, doing: str) -> str:
    """``runs/x is being trained by pid 123 on host h since 04:01:02 UTC (...)``."""
    if not holder:  # taken a moment ago: its owner has not written its name yet
        return f"{run_dir} is being {doing} by another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    host = holder.get("host")
    where = "" if host == socket.gethostname() else f" on host {host}"
    command = f" ({holder['command']})" if holder.get("command") else ""
    return (f"{run_dir} is being {doing} by pid {holder.get('pid')}{where} since "
            f"{since}{command}")


def _read_holder(fd: int) -> dict:
    """What the holder wrote into the lock file, or {} if nothing (yet) or unreadable."""
    for _ in range(5):  # the holder writes its name just after taking the lock
        try:
            text = os.pread(fd, 4096, 0).decode()
            if text:
                return json.loads(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {}


def _open_locked(path: Path) -> int:
    """An fd of ``path`` holding its exclusive lock, or RunBusy naming the holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunBusy(_describe(path.parent, holder, "trained") + ". Two writers would "
                          "overwrite each other's files: wait for it to finish (the same "
                          f"command then resumes or finds the run done), stop it (kill "
                          f"{holder.get('pid', '<pid>')}), or choose another --run-dir.") from None
        except BaseException:
            os.close(fd)
            raise
        # The holder before us unlinks the file as it lets go: if ours is that
        # unlinked file, a newcomer may lock a fresh one beside us; start again.
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold(run_dir, command: list[str] | None = None):
    """Holds the run directory's writer lock for the block (creating the directory).

    Raises:
      RunBusy: another live process holds it; nothing is changed.
    """
    run_dir = Path(run_dir)
    if fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = _open_locked(path)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(command or [os.path.basename(sys.executable), *sys.argv])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        # Unlink before letting go, so the file never outlives its lock
        # (see _open_locked for the newcomer who opened it meanwhile).
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def check_not_training(run_dir, doing: str = "evaluate") -> None:
    """Raises RunBusy if a live process holds ``run_dir``'s writer lock; creates nothing.

    ``doing``: what the caller would do, for the message.
    """
    path = Path(run_dir) / LOCK
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody trains it (or a folder we cannot read)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        raise RunBusy(_describe(Path(run_dir), holder, "trained") + f": cannot {doing} it "
                      f"before training ends. Run the same command again once pid "
                      f"{holder.get('pid', '<pid>')} has finished (its last line is "
                      f"'test accuracy ...').") from None
    finally:
        os.close(fd)
