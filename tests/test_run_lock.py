"""One writer per run directory (stn.train.run_lock), with real processes.

A holder process takes the lock of a run directory and sleeps; a second
writer (train.py, train_and_evaluate) is refused naming it, evaluate.py
says the run is being trained, and nothing in the directory changes. A
holder killed with SIGKILL leaves its lock file, which is taken over.
The holders are tiny Python processes, not trainings, forked by one server.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import helpers
from stn.train import run_lock, runs, training

# One server process per test module imports run_lock (and TensorFlow with it)
# once; each holder is a child it forks, which takes a run dir's lock and sleeps.
SERVER = textwrap.dedent("""
    import os, signal, sys, time
    from stn.train import run_lock
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # a killed child is reaped at once
    for line in sys.stdin:  # a run dir per line
        if os.fork() == 0:
            run_dir = line.strip()
            with run_lock.hold(run_dir, ["holder.py", "--run-dir", run_dir]):
                print(os.getpid(), flush=True)
                time.sleep(120)
            os._exit(0)
""")


class Holder:
    """A live process holding the lock of a run dir (a child of the server)."""

    def __init__(self, pid: int):
        self.pid = pid

    def kill(self):
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 30.0):
        """Until the process is gone (and with it its lock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.01)
        pytest.fail(f"holder {self.pid} still alive after {timeout} s")


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=helpers.ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(helpers.ROOT)})
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def holder(server):
    """Starts a process that holds the lock of a run dir; yields a starter, kills them all."""
    holders = []

    def start(run_dir):
        server.stdin.write(f"{run_dir}\n")
        server.stdin.flush()
        holders.append(Holder(int(server.stdout.readline())))
        return holders[-1]

    yield start
    for proc in holders:
        proc.kill()
        proc.wait()


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_writer_is_refused_naming_the_first(tmp_path, holder):
    proc = holder(tmp_path / "run")
    record = json.loads((tmp_path / "run" / runs.LOCK).read_text())
    assert (record["pid"], record["host"]) == (proc.pid, socket.gethostname())
    with pytest.raises(run_lock.RunBusy, match=rf"run is being trained by pid {proc.pid} since "
                       r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(holder.py --run-dir .*\)\. Two "
                       rf"writers .* wait for it to finish .* \(kill {proc.pid}\), or choose "
                       "another --run-dir"):
        with run_lock.hold(tmp_path / "run"):
            pytest.fail("two holders")
    proc.kill()
    proc.wait()
    with run_lock.hold(tmp_path / "run"):  # free once the holder is gone
        pass


def test_train_py_and_evaluate_py_refuse_a_run_being_trained(finished_run_copy, holder, capsys):
    before = snapshot(finished_run_copy)
    proc = holder(finished_run_copy)
    locked = snapshot(finished_run_copy)
    argv = ["--preset", "seed", "--epochs", "2", "--run-dir", str(finished_run_copy)]
    assert helpers.entry_point("train")(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: {finished_run_copy} is being trained by pid "
                          f"{proc.pid}")
    assert helpers.entry_point("evaluate")(["--run-dir", str(finished_run_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"evaluate.py: error: {finished_run_copy} is being trained by pid "
                          f"{proc.pid}") and "cannot evaluate it before training ends" in err
    assert snapshot(finished_run_copy) == locked  # 0 files written by the second writers
    proc.kill()
    proc.wait()
    # The lock file a killed holder leaves is all that differs, and it is not held.
    assert set(snapshot(finished_run_copy)) == {*before, runs.LOCK}
    run_lock.check_not_training(finished_run_copy)


def test_train_and_evaluate_refuses_before_loading_data(tmp_path, holder, monkeypatch):
    from stn.data import pipeline

    monkeypatch.setattr(pipeline, "load_data", lambda *a, **k: pytest.fail("data loaded"))
    holder(tmp_path / "run")
    with pytest.raises(run_lock.RunBusy):
        training.train_and_evaluate(helpers.FINISHED_CONFIG, tmp_path / "run", verbose=0)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [runs.LOCK]


def test_a_lock_left_by_sigkill_is_taken_over(tmp_path, holder):
    proc = holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run" / runs.LOCK).exists()  # left behind, no longer held
    run_lock.check_not_training(tmp_path / "run")
    with run_lock.hold(tmp_path / "run", ["me"]):
        record = json.loads((tmp_path / "run" / runs.LOCK).read_text())
        assert (record["pid"], record["command"]) == (os.getpid(), "me")
    assert not (tmp_path / "run" / runs.LOCK).exists()  # removed on release


def test_the_lock_file_does_not_make_a_new_dir_look_used(tmp_path):
    with run_lock.hold(tmp_path / "run"):
        assert runs.init_run_dir(tmp_path / "run", helpers.FINISHED_CONFIG) is False
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [runs.CONFIG]
