"""The bad-input table: bad flags, bad paths, broken files and kills.

Each row of docs/errors.md ("What happens when things go wrong") is a test here: what
the user gives, what they see (exit status and message), and what is kept.
Entry points run in-process (``helpers.entry_point``); the one run that trains
is tiny (the seed preset with a 32-unit dense layer, 200 images) and shared.
"""

import contextlib
import gzip
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import helpers
from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.train import checkpoints
from stn.data import mnist
from stn.train import precision
from stn.train import runs
from stn.train import training

ROOT = helpers.ROOT
pytestmark = pytest.mark.slow
# If a check were missing, the entry point would train this much, not 20 epochs.
TINY = ["--preset", "paper", "--epochs", "1", "--max-train-examples", "200", "--batch-size", "100"]
TEMPORARY = re.compile(r"^\..*\.tmp(\.keras)?$")  # what an interrupted write leaves


def small_config(**fields):
    """The seed preset with a 32-unit dense layer, one epoch on 200 images,
    validated and tested on 200.

    On the 28 x 28 R digits: what these tests check (kills, damaged and
    stale files) does not depend on the images.
    """
    fields = {"epochs": 1, "batch_size": 100, "max_train_examples": 200,
              "max_eval_examples": 200, **fields}
    return C.make_config("seed", "r", model_overrides={"dense_units": 32}, **fields,
                         recipe="cosine")


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def snapshot(folder):
    """Every file under ``folder``: relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def temporaries(folder):
    return [name for name in listing(folder) if TEMPORARY.match(name)]


@pytest.fixture(scope="module")
def train_main():
    return helpers.entry_point("train")


@pytest.fixture(scope="module")
def evaluate_main():
    return helpers.entry_point("evaluate")


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import test_bad_input
    from stn.train import training

    real_replace = os.replace
    def replace(src, dst):  # kill -9 once the checkpoint's temporary file is written
        if os.path.basename(dst) == "checkpoint.npz":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    os.replace = replace
    training.train_and_evaluate(test_bad_input.small_config(), sys.argv[1], verbose=0)
""").format(tests=str(ROOT / "tests"))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A tiny run killed (-9) while writing its checkpoint, then resumed to the end.

    Returns ``(run_dir, files left by the kill, what the resumed run printed on
    stderr, its metrics)``. The run's config is ``small_config()``; tests that
    change the run work on a copy (``run_copy``).
    """
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    left = listing(run_dir)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        metrics = training.train_and_evaluate(small_config(), run_dir, verbose=0)
    return run_dir, left, err.getvalue(), metrics


@pytest.fixture
def run_copy(killed_run, tmp_path):
    """A copy of the finished run of ``killed_run``."""
    return shutil.copytree(killed_run[0], tmp_path / "run")


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if MNIST is loaded: errors must come before any work."""
    def forbidden(*args, **kwargs):
        pytest.fail("the data was loaded before the error was found")

    monkeypatch.setattr(stn_data, "load_data", forbidden)


# --- bad flags -------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--learning-rate", "inf"], "argument --learning-rate: must be finite, got inf"),
    (["--learning-rate", "1e999"], "argument --learning-rate: must be finite, got inf"),
    (["--learning-rate=-inf"], "argument --learning-rate: must be finite, got -inf"),
    (["--learning-rate", "nan"], "argument --learning-rate: must be finite, got nan"),
    (["--precision", "float16"], "invalid choice: 'float16'"),
    (["--keep"], "argument --keep: only applies to --dry-run"),
    (["--output-jitter", "2"], "output_jitter must be in [0, 1), got 2.0"),
    (["--alignment-weight", "0", "--alignment-image-pull", "0.1"],
     "acts on alignment_weight: set alignment_weight too"),
], ids=["inf", "1e999", "-inf", "nan", "float16", "keep without dry-run", "jitter 2",
        "image pull without the term"])
def test_bad_flags_exit_2_before_any_work(tmp_path, capsys, train_main, argv, message):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TINY, *argv, "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


@pytest.mark.parametrize("field", ["learning_rate", "epsilon", "beta_1", "beta_2"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_config_rejects_non_finite_floats(field, value):
    with pytest.raises(ValueError, match=field):
        small_config(**{field: value})


def test_json_files_are_strict(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError, match=r"metrics.json: val_loss is inf, runs\[1\] is nan"):
        runs.write_json(path, {"val_loss": math.inf, "runs": [1.0, math.nan], "ok": 2.0})
    assert listing(tmp_path) == []  # neither the file nor a temporary one
    runs.write_json(path, {"ok": 2.0})
    assert json.loads(path.read_text()) == {"ok": 2.0}


def test_config_json_with_infinity_or_damaged_is_reported(run_copy):
    path = run_copy / runs.CONFIG
    record = json.loads(path.read_text())
    record["config"]["learning_rate"] = math.inf  # as the old code wrote it
    path.write_text(json.dumps(record))
    before = snapshot(run_copy)
    with pytest.raises(runs.RunError, match="invalid config .*learning_rate must be finite"):
        training.train_and_evaluate(small_config(), run_copy, verbose=0)
    path.write_text(path.read_text()[:100])
    with pytest.raises(runs.RunError, match="config.json is unreadable"):
        runs.init_run_dir(run_copy, small_config())
    assert snapshot(run_copy) == {**before, runs.CONFIG: path.read_bytes()}


# --- bad paths -------------------------------------------------------------------

def unwritable_dir(tmp_path):
    """A directory with mode 0o500, or a skip where that does not stop writes (root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):
        folder.chmod(0o700)
        pytest.skip("running as root: a 0o500 directory is still writable")
    return folder


@pytest.mark.parametrize("kind", ["file", "under a file", "unwritable"])
def test_unusable_run_dir_is_refused_before_loading_data(tmp_path, capsys, train_main, no_data,
                                                         kind):
    (tmp_path / "file").write_text("mine")
    if kind == "unwritable":
        run_dir = unwritable_dir(tmp_path) / "run"
    elif kind == "under a file":
        run_dir = tmp_path / "file" / "run"
    else:
        run_dir = tmp_path / "file"
    assert train_main([*TINY, "--run-dir", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("train.py: error: ") and str(run_dir) in err
    assert "is a file" in err or "not writable" in err
    assert re.search(r"precision: \S+ \(auto: .+\)", out)  # printed before the error
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("kind", ["file", "under a file", "unwritable run dir"])
def test_unusable_evaluate_outputs_are_refused_before_any_work(run_copy, tmp_path, capsys,
                                                               evaluate_main, monkeypatch, kind):
    from stn.analysis import evaluation

    def forbidden(*args, **kwargs):
        pytest.fail("the evaluation started before the error was found")

    monkeypatch.setattr(evaluation, "evaluate_run", forbidden)
    (tmp_path / "figures").write_text("mine")
    run_dir = run_copy
    argv = {"file": ["--images", str(tmp_path / "figures")],
            "under a file": ["--images", str(tmp_path / "figures" / "png")],
            "unwritable run dir": []}[kind]
    if kind == "unwritable run dir":
        run_dir = shutil.copytree(run_copy, unwritable_dir(tmp_path) / "run")
        run_dir.chmod(0o500)
    assert evaluate_main(["--run-dir", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: ")
    assert "is a file" in err or "not writable" in err
    assert not (run_dir / "results.json").exists()
    assert (tmp_path / "figures").read_text() == "mine"


def test_mnist_path_that_does_not_exist_is_an_error_even_with_a_cache(tmp_path, capsys,
                                                                       train_main):
    missing = tmp_path / "mnist.npz"
    assert train_main([*TINY, "--mnist", str(missing), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file or folder" in err


@pytest.mark.parametrize("content, message", [
    (os.urandom(4096), "is not an .npz archive"),
    (gzip.compress(b"PK\x03\x04" + bytes(100)), "is gzip-compressed"),
], ids=["random bytes", "gzip"])
def test_broken_mnist_file_is_named_without_numpy_advice(tmp_path, capsys, train_main,
                                                         content, message):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    argv = [*TINY, "--mnist", str(path), "--data-dir", str(tmp_path / "empty-cache"),
            "--run-dir", str(tmp_path / "run")]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "allow_pickle" not in err
    assert not (tmp_path / "empty-cache" / mnist.CACHE_NAME).exists()


# --- broken files ----------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_model_is_reported_and_the_advice_works(run_copy, capsys, evaluate_main, damage):
    model = run_copy / runs.MODEL
    good = model.read_bytes()
    model.write_bytes(os.urandom(1000) if damage == "garbage" else good[:len(good) // 2])
    broken = model.read_bytes()
    assert evaluate_main(["--run-dir", str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert "is damaged or not a Keras archive" in err and "File not found" not in err
    assert f"delete {model}" in err.lower()
    assert model.read_bytes() == broken  # reported, not replaced
    if damage == "garbage":  # follow the advice once: the model comes back, without training
        model.unlink()
        training.train_and_evaluate(small_config(), run_copy, verbose=0)
        assert runs.load_model(run_copy).count_params() > 0


def test_history_missing_beside_a_checkpoint_is_refused(run_copy):
    (run_copy / runs.HISTORY).unlink()
    before = snapshot(run_copy)
    with pytest.raises(runs.RunError, match=r"history.csv holds 0 epochs but .*checkpoint.npz "
                                            r"was saved after epoch 1"):
        training.train_and_evaluate(small_config(), run_copy, verbose=0)
    assert snapshot(run_copy) == before


def test_stale_temporaries_are_removed_on_resume(run_copy, capsys):
    stale = [".checkpoint.npz.k2x_9abc.tmp", ".history.csv.a1b2c3d4.tmp", ".model.tmp.keras"]
    for name in stale:
        (run_copy / name).write_bytes(b"half written")
    (run_copy / "notes.tmp").write_text("mine")
    assert runs.init_run_dir(run_copy, small_config()) is True
    assert temporaries(run_copy) == [] and (run_copy / "notes.tmp").exists()
    assert f"removed 3 temporary files left by an interrupted write in {run_copy}" in \
        capsys.readouterr().err


def test_run_dir_killed_while_writing_its_first_config_is_reused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".config.json.ab12cd34.tmp").write_text('{"format": 1, "con')
    assert runs.init_run_dir(run_dir, small_config()) is False
    assert listing(run_dir) == [runs.CONFIG]


# --- kills and interrupts ----------------------------------------------------------

def test_kill_during_a_checkpoint_write_then_resume(killed_run):
    run_dir, left, err, metrics = killed_run
    stale = [name for name in left if TEMPORARY.match(name)]
    assert len(stale) == 1 and stale[0].startswith(".checkpoint.npz.")
    assert runs.CHECKPOINT not in left  # the kill came before the first checkpoint
    assert f"removed 1 temporary file left by an interrupted write in {run_dir}" in err
    assert temporaries(run_dir) == []
    assert [row["epoch"] for row in runs.read_history(run_dir)] == [1]
    assert json.loads((run_dir / runs.METRICS).read_text()) == metrics


@pytest.fixture
def dry_runs(tmp_path, monkeypatch):
    """Temporary run dirs go to ``tmp_path/tmp``; training is replaced by ``fake``.

    What is under test is the clean-up around training; a real dry run is
    ``test_training.py::test_dry_run_on_real_mnist``.
    """
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seen = []

    def fake(raises=None):
        def train_and_evaluate(config, run_dir, **kwargs):
            seen.append(run_dir)
            runs.init_run_dir(run_dir, config)
            if raises:
                raise raises
            return {}
        monkeypatch.setattr(training, "train_and_evaluate", train_and_evaluate)

    return tmp_path / "tmp", fake, seen


@pytest.mark.parametrize("raises", [None, KeyboardInterrupt(), runs.RunError("boom")],
                         ids=["success", "ctrl-c", "error"])
def test_dry_run_removes_its_temporary_run_dir(dry_runs, capsys, train_main, raises):
    tmp, fake, seen = dry_runs
    fake(raises)
    if isinstance(raises, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            train_main(["--dry-run"])
    else:
        assert train_main(["--dry-run"]) == (0 if raises is None else 2)
    assert len(seen) == 1 and str(seen[0]).startswith(str(tmp / "stn-dry-run-"))
    assert listing(tmp) == []
    assert f"removed the dry run's directory {seen[0]}" in capsys.readouterr().out


def test_dry_run_keep_and_explicit_run_dir_are_kept(dry_runs, tmp_path, capsys, train_main):
    tmp, fake, seen = dry_runs
    fake()
    assert train_main(["--dry-run", "--keep"]) == 0
    assert listing(tmp) == [os.path.basename(seen[0])]
    assert f"kept the dry run's directory {seen[0]}" in capsys.readouterr().out
    assert train_main(["--dry-run", "--run-dir", str(tmp_path / "mine")]) == 0
    assert listing(tmp_path / "mine") == [runs.CONFIG]


# --- precision ---------------------------------------------------------------------

@pytest.mark.parametrize("capabilities, expected, why", [
    ([(6, 1)], "float32", "compute capability 6.1 has no tensor cores"),
    ([(7, 0)], "mixed_float16", "compute capability 7.0 has float16 tensor cores"),
    ([(7, 5)], "mixed_float16", "compute capability 7.5 has float16 tensor cores"),
    ([(8, 0)], "mixed_bfloat16", "compute capability 8.0 computes in bfloat16"),
    ([(8, 6)], "mixed_bfloat16", "compute capability 8.6 computes in bfloat16"),
    ([(8, 6), (7, 5)], "mixed_float16", "oldest of 2 GPUs"),
    ([None], "float32", "compute capability is unknown"),
])
def test_auto_precision_by_gpu(tmp_path, capabilities, expected, why):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx512_bf16\n")  # a GPU decides, not the CPU
    policy, reason = precision.precision_choice(str(cpuinfo), gpu_capabilities=capabilities)
    assert (policy, precision.auto_precision(str(cpuinfo), capabilities)) == (expected, expected)
    assert why in reason


@pytest.mark.parametrize("flags, expected, why", [
    ("fpu avx2 avx512f avx512_bf16", "mixed_bfloat16", "CPU has AVX512-BF16"),
    ("fpu avx2 amx_bf16 amx_tile", "mixed_bfloat16", "CPU has AMX-BF16"),
    ("fpu avx2 avx512f", "float32", "CPU has neither AVX512-BF16 nor AMX-BF16"),
    (None, "float32", "cannot read"),
])
def test_auto_precision_by_cpu_flags(tmp_path, flags, expected, why):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    policy, reason = precision.precision_choice(str(cpuinfo), gpu_capabilities=[])
    assert policy == expected and why in reason
    assert precision.auto_precision(str(cpuinfo), []) == expected


def test_precision_mixed_float16_is_accepted(tmp_path, capsys, train_main, no_data):
    (tmp_path / "file").write_text("")  # fails right after the config is made
    argv = [*TINY, "--precision", "mixed_float16", "--run-dir", str(tmp_path / "file")]
    assert train_main(argv) == 2
    assert "precision: mixed_float16 (--precision mixed_float16)" in capsys.readouterr().out


# --- the package ---------------------------------------------------------------------

LOAD_WITHOUT_STN_LAYERS = textwrap.dedent("""
    import sys
    import keras
    import stn
    model = keras.saving.load_model(sys.argv[1])
    print(type(model.get_layer("transformer")).__name__)
""")


def test_import_stn_is_enough_to_load_a_saved_model(tmp_path):
    from stn.model import build_model

    path = tmp_path / "model.keras"
    build_model("seed", dense_units=8).save(path)
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_STN_LAYERS, str(path)], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "SpatialTransformer"


def test_checkpoint_is_streamed_not_copied_in_memory(tmp_path):
    import keras

    # Ten equal layers: saving one variable at a time needs a small part of the total.
    model = keras.Sequential([keras.Input((256,)), *[keras.layers.Dense(256) for _ in range(10)]])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    total = sum(v.numpy().nbytes for v in [*model.variables, *optimizer.variables])
    tracemalloc.start()
    try:
        checkpoints.save_checkpoint(tmp_path, model, optimizer, epoch=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < total / 4, f"{peak:,} bytes at peak to save {total:,}"
    assert listing(tmp_path) == [runs.CHECKPOINT]
    weights = [v.numpy() for v in model.variables]
    for v in model.variables:
        v.assign(np.zeros(v.shape, v.dtype))
    # restore_checkpoint also checks that history.csv reaches the checkpoint's epoch.
    runs.write_history(tmp_path, [dict.fromkeys(runs.HISTORY_FIELDS, e) for e in (1, 2, 3)])
    assert checkpoints.restore_checkpoint(tmp_path, model, optimizer) == 3
    for before, v in zip(weights, model.variables):
        np.testing.assert_array_equal(before, v.numpy())


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "ctrl-c"])
def test_failed_checkpoint_write_keeps_the_old_one(tmp_path, monkeypatch, error):
    import keras
    from stn.model import build_model

    model = build_model("seed", dense_units=8)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    checkpoints.save_checkpoint(tmp_path, model, optimizer, epoch=1)
    before = (tmp_path / runs.CHECKPOINT).read_bytes()
    real = np.lib.format.write_array
    calls = []

    def disk_full(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(type(error)):
        checkpoints.save_checkpoint(tmp_path, model, optimizer, epoch=2)
    assert listing(tmp_path) == [runs.CHECKPOINT]
    assert (tmp_path / runs.CHECKPOINT).read_bytes() == before
