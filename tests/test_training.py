"""train.py and stn.train.training on real MNIST: smoke run, resume, errors, engines."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import helpers
from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.train import runs
from stn.train import training

ROOT = helpers.ROOT
pytestmark = pytest.mark.slow
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def small_config(dense_units=32, **fields):
    """The seed preset with a small dense layer, on 500 training images,
    validated and tested on 500.

    On the 28 x 28 R digits: the tests that use it check the training loop,
    not the images.
    """
    fields = {"epochs": 2, "batch_size": 100, "max_train_examples": 500,
              "max_eval_examples": 500, **fields}
    return C.make_config("seed", "r", model_overrides={"dense_units": dense_units}, **fields,
                         recipe="cosine")


def metrics(run_dir):
    return [{k: row[k] for k in METRIC_COLUMNS} for row in runs.read_history(run_dir)]


def run_train(*args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def train_main():
    """train.py's main(), imported in-process (fast error-path checks)."""
    return helpers.entry_point("train")


def test_help_lists_every_flag(capsys, train_main):
    # In-process, to spare a TensorFlow start; train.py run as a script is
    # test_dry_run_on_real_mnist's.
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--preset", "--protocol", "--epochs", "--batch-size", "--learning-rate",
                 "--seed", "--run-dir", "--mnist", "--max-train-examples", "--resample-warps",
                 "--deterministic", "--dry-run", "--strategy", "--localization-lr-scale",
                 "--warp-ramp-epochs"):
        assert flag in out


def test_help_lists_the_research_settings_apart(capsys, train_main):
    from stn.train import cli
    from stn.train.config import RESEARCH_SETTINGS, SETTINGS
    with pytest.raises(SystemExit):
        train_main(["--help"])
    out = capsys.readouterr().out
    everyday, research = out.split("\ntraining settings:")[1].split(f"\n{cli.RESEARCH_GROUP}:", 1)
    assert len(RESEARCH_SETTINGS) == 12 and set(RESEARCH_SETTINGS) < set(SETTINGS)
    def listed(flag, text):
        return re.search(rf"^  {flag}[ ,\n]", text, re.M) is not None

    for name in SETTINGS:
        assert listed(cli.flag(name), research) == (name in RESEARCH_SETTINGS), name
        assert listed(cli.flag(name), everyday) == (name not in RESEARCH_SETTINGS), name
    for flag in ("--alignment-weight", "--congeal-weight", "--output-jitter",
                 "--transformer-iterations", "--warp-ramp-epochs", "--localization-lr-scale"):
        assert listed(flag, research) and not listed(flag, everyday)

def test_dry_run_on_real_mnist(tmp_path, capsys, train_main):
    run_dir = tmp_path / "dry"
    proc = run_train("--dry-run", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / runs.CONFIG).read_text())
    assert record["config"]["max_steps_per_epoch"] == 2
    assert record["config"]["max_eval_examples"] == 1000
    assert record["environment"]["tensorflow"]
    assert len(runs.read_history(run_dir)) == 1
    assert (run_dir / runs.CHECKPOINT).exists() and (run_dir / runs.MODEL).exists()
    final = json.loads((run_dir / runs.METRICS).read_text())
    assert 0.0 <= final["test_accuracy"] <= 1.0
    # Running the finished run again trains nothing and succeeds (in-process:
    # the script's start-up was checked above).
    capsys.readouterr()
    assert train_main(["--dry-run", "--run-dir", str(run_dir)]) == 0
    assert "after epoch 1 of 1" in capsys.readouterr().out


@pytest.mark.parametrize("preset, protocol", [("st-fcn-projective", "p"),
                                              ("st-cnn-tps", "e")])
def test_dry_run_of_every_transformer_kind(tmp_path, capsys, train_main, preset, protocol):
    # The affine kind is the default preset's (above); in-process, to spare a TF start.
    run_dir = tmp_path / preset
    assert train_main(["--preset", preset, "--protocol", protocol, "--dry-run",
                       "--run-dir", str(run_dir)]) == 0
    config = runs.read_config(run_dir)
    assert (config.model.preset, config.protocol) == (preset, protocol)
    assert config.model.kind == preset.rsplit("-", 1)[1]
    assert 0.0 <= json.loads((run_dir / runs.METRICS).read_text())["test_accuracy"] <= 1.0
    assert runs.load_model(run_dir).get_layer("transformer").kind == config.model.kind


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: must be positive, got 0"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value"),
    (["--batch-size", "-5"], "argument --batch-size: must be positive, got -5"),
    (["--learning-rate", "nan"], "argument --learning-rate: must be finite, got nan"),
    (["--localization-lr-scale", "0"], "argument --localization-lr-scale: must be positive"),
    (["--preset", "resnet"], "invalid choice: 'resnet'"),
    (["--protocol", "rst"], "invalid choice: 'rst'"),
    (["--seed", "-1"], "argument --seed: must be non-negative, got -1"),
    (["--warp-ramp-epochs", "-1"], "argument --warp-ramp-epochs: must be in [0, epochs"),
    (["--max-train-examples", "0"], "argument --max-train-examples: must be positive"),
    (["--warp-ramp-epochs", "30", "--epochs", "20"],
     "argument --warp-ramp-epochs: must be in [0, epochs = 20], got 30.0"),
    (["--warp-ramp-epochs", "5", "--no-resample-warps"],
     "argument --warp-ramp-epochs: needs resample_warps"),
])
def test_impossible_flags_fail_before_any_work(tmp_path, capsys, train_main, argv, message):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main([*argv, "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


# Settings that only act with another one: the flags given with them.
NEEDS = {"alignment_image_pull": ["--alignment-weight", "1"],
         "alignment_zoom": ["--alignment-weight", "1"],
         "alignment_pull_decay": ["--alignment-weight", "1", "--alignment-image-pull", "0.1"],
         "alignment_pull_epochs": ["--alignment-weight", "1", "--alignment-image-pull", "0.1",
                                   "--alignment-pull-decay"]}
# Settings whose valid values exclude the test's 0.5.
VALUES = {"alignment_zoom": 1.5}


def test_every_training_setting_is_a_flag_that_reaches_the_config():
    # One source: a Config field made by _setting (or one of Config.alignment's,
    # as alignment_<name>) is a Recipe field and a train.py flag of its name,
    # checked by Config.
    train = helpers.script("train.py")
    flat = {name for name in C.SETTINGS if name.startswith(C.ALIGNMENT_PREFIX)}
    assert set(C.RECIPE_FIELDS) == set(C.SETTINGS) - flat | {"alignment"}
    assert {C.ALIGNMENT_PREFIX + f.name for f in dataclasses.fields(C.AlignmentSettings)} == flat
    base = C.make_config(C.DEFAULT_PRESET, recipe=C.DEFAULT_RECIPE)  # train.py without flags
    assert train.make_run_config(train.parse_args([]), "float32") == base
    for name, field in C.SETTING_FIELDS.items():
        old = _setting(base, name)
        flag = "--" + name.replace("_", "-")
        if field.type is bool:
            new, argv = not old, [flag if not old else "--no-" + flag[2:]]
        elif "choices" in field.metadata:
            new = next(c for c in field.metadata["choices"] if c != old)
            argv = [flag, new]
        else:
            new = VALUES.get(name, old + 1 if field.type is int else 0.5)
            argv = [flag, str(new)]
        argv += NEEDS.get(name, [])
        config = train.make_run_config(train.parse_args(argv), "float32")
        assert _setting(config, name) == new != old, name


def _setting(config, name: str):
    """The value of the training setting ``name`` (``alignment_<field>``: Config.alignment's)."""
    if name.startswith(C.ALIGNMENT_PREFIX):
        return getattr(config.alignment, name[len(C.ALIGNMENT_PREFIX):])
    return getattr(config, name)


def test_model_flags_replace_the_presets_fields():
    train = helpers.script("train.py")
    argv = ["--preset", "st-cnn-affine", "--protocol", "r"]
    base = train.make_run_config(train.parse_args(argv), "float32").model
    config = train.make_run_config(train.parse_args(
        [*argv, "--output-jitter", "0.05", "--transformer-iterations", "2"]), "float32")
    assert config.model == dataclasses.replace(base, output_jitter=0.05, transformer_iterations=2)


def test_run_dir_with_another_config_is_refused(tmp_path, capsys, train_main):
    run_dir = tmp_path / "run"
    runs.init_run_dir(run_dir, C.make_config(epochs=3), command=None)
    before = (run_dir / runs.CONFIG).read_bytes()
    assert train_main(["--epochs", "4", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "epochs: 3 there, 4 now" in err
    assert (run_dir / runs.CONFIG).read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == [runs.CONFIG]


def test_readme_recipe_table_shows_each_recipe_as_defined():
    rows = {line.split("|")[1].strip().split()[0].strip("`"): line
            for line in (helpers.ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `")}
    for name, recipe in C.RECIPES.items():
        assert name in rows, f"README's recipe table lacks {name!r}"
        assert recipe.description in rows[name], (name, rows[name])


def test_config_changes_lists_the_differing_leaves_by_dotted_path():
    old = C.config_to_dict(C.make_config("st-cnn-affine", "rts", epochs=3, recipe="cosine"))
    new = C.config_to_dict(C.make_config("st-cnn-tps", "rts", epochs=3, seed=1, recipe="cosine"))
    changes = runs.config_changes(old, new)
    assert changes["model.kind"] == ("affine", "tps")
    assert changes["seed"] == (0, 1)
    assert "epochs" not in changes and "model" not in changes
    assert list(changes) == sorted(changes)
    assert runs.config_changes(old, old) == {}
    assert runs.config_changes({"a": {"b": 1}}, {}) == {"a.b": (1, None)}


def test_as_recorded_fills_a_missing_field_from_legacy_then_defaults():
    defaults = {"epochs": 3, "net": "projections", "rate": 1.0}
    old = {"epochs": 5}  # written before "net" and "rate" existed
    assert runs.as_recorded(old, {"net": "conv3d"}, defaults) == {
        "epochs": 5, "net": "conv3d", "rate": 1.0}
    assert runs.as_recorded({"net": "projections"}, {"net": "conv3d"}) == {"net": "projections"}


def test_non_run_directory_is_refused(tmp_path, capsys, train_main):
    (tmp_path / "notes.txt").write_text("mine")
    assert train_main(["--run-dir", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_checkpoint_of_another_model_is_refused(tmp_path, finished_run):
    wider = dataclasses.replace(helpers.FINISHED_CONFIG, model=dataclasses.replace(
        helpers.FINISHED_CONFIG.model, dense_units=64))
    run_dir = tmp_path / "wider"
    runs.init_run_dir(run_dir, wider)
    checkpoint = run_dir / runs.CHECKPOINT
    checkpoint.write_bytes((finished_run / runs.CHECKPOINT).read_bytes())
    with pytest.raises(runs.RunError, match="does not fit this model"):
        training.train_and_evaluate(wider, run_dir, verbose=0)
    checkpoint.write_bytes(b"not a zip file")
    with pytest.raises(runs.RunError, match="is damaged"):
        training.train_and_evaluate(wider, run_dir, verbose=0)
    assert checkpoint.read_bytes() == b"not a zip file"  # reported, not replaced


def test_deterministic_runs_give_identical_metrics(tmp_path):
    config = small_config(deterministic=True)
    first = training.train_and_evaluate(config, tmp_path / "a", verbose=0)
    second = training.train_and_evaluate(config, tmp_path / "b", verbose=0)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert first["test_accuracy"] == second["test_accuracy"]
    assert metrics(tmp_path / "a")[-1]["train_loss"] < metrics(tmp_path / "a")[0]["train_loss"]


def test_warp_curriculum_hands_each_epoch_its_strength(tmp_path, monkeypatch):
    real, seen, splits = stn_data.train_dataset, [], []

    def spy(split, batch_size, *, epoch, protocol=None, **kwargs):
        seen.append((epoch, protocol.name))
        splits.append(split)
        return real(split, batch_size, epoch=epoch, protocol=protocol, **kwargs)

    monkeypatch.setattr(stn_data, "train_dataset", spy)
    config = small_config(epochs=3, warp_ramp_epochs=2.0, resample_warps=True,
                          max_steps_per_epoch=1)
    training.train_and_evaluate(config, tmp_path / "run", verbose=0)
    assert seen == [(0, "r@0"), (1, "r@0.5"), (2, "r")]
    # A resampling run warps the digits per epoch: the fixed train images are never built.
    assert len({id(s) for s in splits}) == 1 and not splits[0].images_built
    assert runs.read_config(tmp_path / "run").warp_ramp_epochs == 2.0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = stn_data.train_dataset

    def poisoned(split, batch_size, *, epoch, **kwargs):
        dataset = real(split, batch_size, epoch=epoch, **kwargs)
        if epoch == 0:
            return dataset
        # Overflowing pixels: the logits become infinite and the loss NaN, as
        # in a real divergence (a NaN pixel alone would be zeroed by ReLU).
        return dataset.map(lambda images, labels: (images * 3e38, labels))

    monkeypatch.setattr(stn_data, "train_dataset", poisoned)
    run_dir = tmp_path / "run"
    with pytest.raises(training.TrainingDiverged, match=r"loss is (nan|inf) at epoch 2, step 1"):
        training.train_and_evaluate(small_config(), run_dir, verbose=0)
    assert len(runs.read_history(run_dir)) == 1
    assert not (run_dir / runs.MODEL).exists()
    with np.load(run_dir / runs.CHECKPOINT) as checkpoint:
        assert int(checkpoint["epoch"]) == 1
        assert all(np.all(np.isfinite(checkpoint[k])) for k in checkpoint.files)


def resume_config():
    """The resume test's run: the seed preset (dropout in its localization net)
    with a 32-unit dense layer on 28 x 28 R digits, 3 epochs of 6 steps.

    Exact resumption (batch order, fresh warps, dropout masks, Adam and the
    cosine schedule restored from the checkpoint) does not depend on the
    model's size: this one is 0.4M parameters where the default is 26M.
    """
    return C.make_config("seed", "r", model_overrides={"dense_units": 32}, epochs=3,
                         batch_size=100, max_train_examples=600, max_eval_examples=500,
                         deterministic=True, seed=3,
                         recipe="cosine")


KILLED = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import test_training
    from stn.train import training
    training.train_and_evaluate(test_training.resume_config(), sys.argv[1], verbose=0)
""").format(tests=str(ROOT / "tests"))


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, capsys):
    # The kill (-9, from outside) hits a process of its own; the reference and
    # the resumed run are in-process, as the checkpoint is all they share.
    config = resume_config()
    reference = training.train_and_evaluate(config, tmp_path / "ref", verbose=0)

    run_dir = tmp_path / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(run_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not runs.read_history(run_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere in epoch 2 or a checkpoint
    proc.wait()
    assert 1 <= len(runs.read_history(run_dir)) < config.epochs, \
        "the kill came too late to test resuming"

    capsys.readouterr()
    resumed = training.train_and_evaluate(config, run_dir, verbose=1)
    assert "Resuming" in capsys.readouterr().out
    assert metrics(run_dir) == metrics(tmp_path / "ref")
    assert resumed["test_accuracy"] == reference["test_accuracy"]
    assert json.loads((run_dir / runs.METRICS).read_text())["test_accuracy"] == \
        reference["test_accuracy"]


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from stn.train import config as C
    from stn.train import training
    replicas = {}
    for strategy in ("mirrored", "default"):
        config = C.make_config("seed", "r", model_overrides={"dense_units": 32}, epochs=1,
                               batch_size=100, max_train_examples=400, max_eval_examples=400,
                               deterministic=True,
                               strategy=strategy)
        replicas[strategy] = training._strategy(strategy).num_replicas_in_sync
        training.train_and_evaluate(config, f"{sys.argv[1]}/{strategy}", verbose=0)
    print(json.dumps(replicas))
""")


def test_mirrored_strategy_on_two_cpus_matches_one_device(tmp_path):
    # One process for both engines (the two logical CPUs are set before
    # TensorFlow makes its devices; the default strategy uses the first); 28 x 28
    # R digits, as the agreement does not depend on the image size.
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    replicas = json.loads(proc.stdout.strip().splitlines()[-1])
    assert replicas == {"mirrored": 2, "default": 1}
    # Same data, same initial weights: the two engines agree up to the
    # order of float sums across replicas.
    a, b = metrics(tmp_path / "mirrored"), metrics(tmp_path / "default")
    np.testing.assert_allclose(a[0]["train_loss"], b[0]["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(a[0]["val_loss"], b[0]["val_loss"], rtol=1e-3)
