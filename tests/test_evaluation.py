"""stn.analysis.evaluation and evaluate.py: metrics, pose alignment, results.json, errors."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import helpers
from stn.train import config as C
from stn.data import pipeline as stn_data
from stn.analysis import evaluation as E
from stn.analysis import pose as P
from stn.layer import kinds
from stn.data import protocols
from stn.train import runs
from stn.data import warps
from stn.model import build_model

CANVAS = helpers.CANVAS
FIGURES = ("confusion_matrix", "loss_history", "data_augmentation", "architecture")
STN_FIGURES = ("stn_outputs", "pose_alignment")


def seed_warps(n=2000, seed=0):
    return helpers.seed_warps(n, seed)


def constant(n, canvas=CANVAS, **pose):
    """``n`` copies of the sampling matrix of one pose."""
    params = {"rotation": 0.0, "shear": 0.0, "scale": 1.0, "tx": 0.0, "ty": 0.0, **pose}
    return np.repeat(warps.compose(params, canvas), n, axis=0)


def spread_of(pose, name):
    return pose.stats["parameters"][name]["residual"]["std"]


# --- classification metrics ------------------------------------------------------

def test_confusion_matrix_rows_are_true_classes():
    labels = np.repeat(np.arange(10), 5)
    predictions = labels.copy()
    predictions[labels == 3] = 5  # every true 3 is called a 5
    confusion = E.confusion_matrix(labels, predictions)
    assert confusion.shape == (10, 10)
    assert confusion[3, 5] == 5 and confusion[5, 3] == 0
    assert confusion[3, 3] == 0 and confusion[5, 5] == 5
    np.testing.assert_array_equal(confusion.sum(axis=1), 5)  # rows: 5 true digits each


def test_recall_and_accuracy_arithmetic():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 0, 1, 1, 0, 2])
    confusion = E.confusion_matrix(labels, predictions)
    recall = E.per_class_recall(confusion)
    np.testing.assert_allclose(recall[:3], [3 / 4, 1 / 2, 1.0])
    assert np.all(np.isnan(recall[3:]))  # classes with no examples
    assert E.accuracy(confusion) == pytest.approx(5 / 7)


def test_predict_matches_the_model_in_odd_sized_batches():
    model = build_model("seed", dense_units=8)
    images = np.random.default_rng(0).random((23, CANVAS, CANVAS, 1), np.float32)
    logits = E.predict(model, images, batch_size=10)
    assert logits.shape == (23, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, model(images, training=False).numpy(), atol=1e-5)


# --- pose alignment ----------------------------------------------------------------

def test_wrap_degrees_to_the_half_open_interval():
    np.testing.assert_allclose(P.wrap_degrees([180, -180, 190, -190, 540, 0, 359.5]),
                               [180, 180, -170, 170, 180, 0, -0.5])


def test_circular_spread_does_not_split_angles_at_180():
    angles = np.array([179.0, -179.0, 179.0, -179.0])
    circular = P.spread(angles, circular=True)
    assert circular["std"] == pytest.approx(1.0)
    assert abs(circular["median"]) == pytest.approx(180.0)
    assert P.spread(angles)["std"] == pytest.approx(179.0)  # the naive answer


def test_perfect_canonicaliser_leaves_no_spread():
    sampling = seed_warps()
    pose = P.pose_alignment(sampling, warps.invert(sampling), CANVAS)
    np.testing.assert_allclose(warps.chain(sampling, warps.invert(sampling)),
                               constant(len(sampling)), atol=1e-12)  # residual = identity
    for name in ("rotation", "scale", "shear", "tx", "ty"):
        stats = pose.stats["parameters"][name]
        assert stats["residual"]["std"] < 1e-9 and stats["ratio"] < 1e-9, name
        assert stats["raw"]["std"] > 0.1
    assert pose.stats["translation"]["residual_rms"] < 1e-9
    assert pose.stats["n_excluded"] == 0 and pose.stats["n_reflected"] == 0


def test_identity_theta_leaves_the_raw_warp():
    sampling = seed_warps()
    pose = P.pose_alignment(sampling, constant(len(sampling)), CANVAS)
    for name in ("rotation", "scale", "shear", "tx", "ty"):
        np.testing.assert_allclose(pose.residual[name], pose.raw[name], atol=1e-9)
        assert pose.stats["parameters"][name]["ratio"] == pytest.approx(1.0)
    # The seed protocol's ranges: uniform +-30 deg has std 30 / sqrt(3).
    raw = pose.stats["parameters"]["rotation"]["raw"]
    assert raw["std"] == pytest.approx(30 / np.sqrt(3), rel=0.05)
    assert raw["iqr"] == pytest.approx(30, rel=0.05)
    assert pose.stats["parameters"]["aspect"]["ratio"] is None  # raw aspect is constant


def test_identity_theta_of_any_kind_leaves_the_raw_tps_warp():
    # The E protocol's TPS warps, whose poses are affine fits; also a path of
    # experiments/table1.py's E cells, too slow there (10,000 digits).
    sampling = protocols.get_protocol("e").sample(300, np.random.default_rng(0))
    for theta_kind in ("affine", "tps"):
        pose = P.pose_alignment(sampling, kinds.identity(theta_kind, len(sampling)), 28,
                                "tps", theta_kind)
        for name in ("rotation", "scale", "shear", "tx", "ty"):
            np.testing.assert_allclose(pose.residual[name], pose.raw[name], atol=1e-9)
        assert pose.stats["n_excluded"] == 0
        assert pose.stats["parameters"]["rotation"]["raw"]["std"] > 0.1


def test_canonicaliser_with_a_constant_half_turn_has_no_spread():
    sampling = seed_warps()
    theta = warps.chain(warps.invert(sampling), constant(len(sampling), rotation=180.0))
    pose = P.pose_alignment(sampling, theta, CANVAS)
    # Numerically the residual rotations straddle +-180 ...
    assert np.any(pose.residual["rotation"] > 179) and np.any(pose.residual["rotation"] < -179)
    # ... yet the spread is ~0 and the common pose is the half turn.
    assert spread_of(pose, "rotation") < 1e-6
    assert pose.stats["parameters"]["rotation"]["ratio"] < 1e-6
    assert abs(pose.stats["parameters"]["rotation"]["residual"]["median"]) == pytest.approx(180)


def test_median_residual_is_the_common_pose():
    sampling = seed_warps()
    common = constant(len(sampling), rotation=5.0, scale=1.25, tx=2.0, ty=-1.0)
    pose = P.pose_alignment(sampling, warps.chain(warps.invert(sampling), common), CANVAS)
    medians = {k: v["residual"]["median"] for k, v in pose.stats["parameters"].items()}
    expected = {"rotation": 5.0, "scale": 1.25, "shear": 0.0, "tx": 2.0, "ty": -1.0,
                "aspect": 1.0}
    for name, value in expected.items():
        assert medians[name] == pytest.approx(value, abs=1e-9), name
        assert spread_of(pose, name) < 1e-9


def test_translation_rms_is_the_2d_distance_from_the_mean():
    n = 4
    sampling = constant(n)
    # Residual centres at (+-3, 0) and (0, +-4) px around (1, 1): rms^2 = (9 + 9 + 16 + 16) / 4.
    shifts = [(4.0, 1.0), (-2.0, 1.0), (1.0, 5.0), (1.0, -3.0)]
    theta = np.concatenate([constant(1, tx=x, ty=y) for x, y in shifts])
    pose = P.pose_alignment(sampling, theta, CANVAS)
    assert pose.stats["translation"]["residual_rms"] == pytest.approx(np.sqrt(12.5))
    assert pose.stats["parameters"]["tx"]["residual"]["std"] == pytest.approx(np.sqrt(4.5))
    assert pose.stats["translation"]["ratio"] is None  # the raw warps do not move


def test_singular_and_non_finite_residuals_are_counted_not_hidden():
    sampling = seed_warps(100)
    theta = warps.invert(sampling)
    theta[0] = 0.0  # singular
    theta[1, 0, 0] = np.nan
    theta[2, 1, 2] = np.inf
    theta[3, :, 0] *= -1  # a flip: finite, kept, and counted as reflected
    pose = P.pose_alignment(sampling, theta, CANVAS)
    assert pose.stats["n"] == 100 and pose.stats["n_valid"] == 97
    assert pose.stats["n_excluded"] == 3 and pose.stats["n_reflected"] == 1
    assert not pose.valid[:3].any() and pose.valid[3:].all()
    assert all(np.isfinite(p["residual"]["std"]) for p in pose.stats["parameters"].values())


def test_all_residuals_singular():
    sampling = seed_warps(10)
    pose = P.pose_alignment(sampling, np.zeros_like(sampling), CANVAS)
    assert pose.stats["n_excluded"] == 10 and pose.stats["parameters"] is None
    targets = P.pose_targets(pose.stats)
    assert targets["rotation_std_ratio"]["met"] is None


def test_targets_met_and_missed():
    sampling = seed_warps()
    good = P.pose_targets(P.pose_alignment(sampling, warps.invert(sampling), CANVAS).stats)
    assert good["rotation_std_ratio"]["met"] is True
    assert good["translation_std_px"]["met"] is True
    bad = P.pose_targets(P.pose_alignment(sampling, constant(len(sampling)), CANVAS).stats)
    assert bad["rotation_std_ratio"]["met"] is False
    assert bad["rotation_std_ratio"]["value"] == pytest.approx(1.0)
    assert bad["translation_std_px"]["met"] is False
    assert bad["translation_std_px"]["value"] > 5  # uniform +-10 px: std 5.8


# --- results.json on a synthetic evaluation ---------------------------------------

def synthetic_evaluation(n=50, transformer=True):
    """An Evaluation of an untrained small model on random warped blobs (no MNIST)."""
    split = helpers.synthetic_split(n, np.random.default_rng(1))
    images, labels, sampling = split.images, split.labels, split.warps
    config = C.make_config("seed" if transformer else "cnn", model_overrides={"dense_units": 8},
                           recipe="cosine")
    model = build_model(config.model)
    logits = E.predict(model, images)
    predictions = logits.argmax(axis=1)
    extra = {}
    if transformer:
        theta = constant(n).astype(np.float32)
        extra = {"theta": theta, "transformed": images,
                 "pose": P.pose_alignment(sampling, theta, CANVAS)}
    history = [{"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.3, "val_loss": 1.5,
                "val_accuracy": 0.5, "seconds": 1.0}]
    return E.Evaluation(Path("synthetic-run"), config, model, split, logits, predictions,
                        E.confusion_matrix(labels, predictions), history, **extra)


@pytest.mark.parametrize("transformer", [True, False])
def test_results_are_strict_json_with_the_documented_fields(transformer):
    record = E.results(synthetic_evaluation(transformer=transformer))
    text = json.dumps(record, allow_nan=False)  # NaN recall (no examples) became null
    assert json.loads(text) == record
    for key in ("format", "run_dir", "protocol", "seed", "preset", "test_examples", "accuracy",
                "error_percent", "per_class_recall", "confusion_matrix", "pose", "targets",
                "model_parameters"):
        assert key in record
    assert record["test_examples"] == 50 and sum(map(sum, record["confusion_matrix"])) == 50
    assert record["error_percent"] == pytest.approx(100 * (1 - record["accuracy"]))
    if transformer:
        rotation = record["pose"]["parameters"]["rotation"]
        assert set(rotation) >= {"residual", "raw", "ratio", "iqr_ratio", "unit"}
        assert set(rotation["residual"]) == {"std", "iqr", "median"}
        assert all(isinstance(t["met"], bool) for t in record["targets"].values())
        assert "rotation" in E.summary_text(record)
    else:
        assert record["pose"] is None and record["targets"] is None
        assert "no transformer" in E.summary_text(record)


# --- evaluate.py -------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluate_main():
    """evaluate.py's main(), imported in-process."""
    return helpers.entry_point("evaluate")


def untrained_run(run_dir, preset="seed"):
    """A finished-looking run directory without training: config and model.keras."""
    config = C.make_config(preset, model_overrides={"dense_units": 8}, epochs=1, recipe="cosine")
    runs.init_run_dir(run_dir, config)
    runs.save_model(run_dir, build_model(config.model))
    return config


def test_help_lists_every_flag(evaluate_main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--run-dir", "--images", "--mnist", "--data-dir"):
        assert flag in out


def test_missing_run_dir_is_exit_code_2(tmp_path, capsys, evaluate_main):
    assert evaluate_main(["--run-dir", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_run_without_model_is_exit_code_2(tmp_path, capsys, evaluate_main):
    runs.init_run_dir(tmp_path, C.make_config(epochs=1))
    assert evaluate_main(["--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model.keras not found" in err and "has not finished" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs.CONFIG]  # nothing written


def test_run_of_another_format_is_exit_code_2(tmp_path, capsys, evaluate_main):
    untrained_run(tmp_path)
    record = json.loads((tmp_path / runs.CONFIG).read_text())
    (tmp_path / runs.CONFIG).write_text(json.dumps({**record, "format": 99}))
    assert evaluate_main(["--run-dir", str(tmp_path)]) == 2
    assert "run format 99" in capsys.readouterr().err
    assert not (tmp_path / E.RESULTS).exists()


def test_unreadable_mnist_is_exit_code_2(tmp_path, capsys, evaluate_main):
    untrained_run(tmp_path / "run")
    argv = ["--run-dir", str(tmp_path / "run"), "--data-dir", str(tmp_path / "empty-cache"),
            "--mnist", str(tmp_path / "no-such-mnist.npz")]
    assert evaluate_main(argv) == 2
    assert "--mnist" in capsys.readouterr().err
    assert not (tmp_path / "run" / E.RESULTS).exists()


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]  # IHDR: width, height
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


@pytest.fixture
def trained_run(finished_run_copy):
    """The shared finished run (conftest.py), a copy: evaluate.py writes into it."""
    return finished_run_copy


@pytest.mark.slow
def test_evaluate_a_trained_run_end_to_end(trained_run, tmp_path, capsys, evaluate_main):
    images = tmp_path / "images"
    assert evaluate_main(["--run-dir", str(trained_run), "--images", str(images)]) == 0
    out = capsys.readouterr().out
    record = json.loads((trained_run / E.RESULTS).read_text())

    # Independent recomputation: Keras' own predict on a freshly built test set
    # (the run's: the first N test digits of a smoke run, Config.max_eval_examples).
    n = helpers.FINISHED_CONFIG.max_eval_examples
    test = stn_data.load_data("seed", 0, max_train_examples=1).test
    test = test.images[:n], test.labels[:n]
    model = keras.saving.load_model(trained_run / runs.MODEL)
    predicted = model.predict(test[0], batch_size=500, verbose=0).argmax(axis=1)
    assert record["accuracy"] == pytest.approx(np.mean(predicted == test[1]), abs=1e-12)
    final = json.loads((trained_run / runs.METRICS).read_text())
    assert record["accuracy"] == pytest.approx(final["test_accuracy"], abs=2e-4)

    confusion = np.array(record["confusion_matrix"])
    assert confusion.sum() == record["test_examples"] == n
    assert np.trace(confusion) / n == pytest.approx(record["accuracy"], abs=1e-12)
    np.testing.assert_allclose(record["per_class_recall"],
                               np.diag(confusion) / confusion.sum(axis=1))
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(test[1], minlength=10))
    assert record["model_parameters"] == model.count_params()
    assert record["pose"]["n"] == n and record["targets"] is not None

    for name in FIGURES + STN_FIGURES:
        path = images / f"{name}.png"
        assert is_png(path) and path.stat().st_size > 10_000, name
        assert min(png_size(path)) >= 300, name
        assert str(path) in out
    assert f"{100 * record['accuracy']:.2f}%" in out and "results:" in out


@pytest.mark.slow
def test_evaluate_a_cnn_run_skips_the_transformer_figures(tmp_path, capsys, evaluate_main):
    untrained_run(tmp_path, preset="cnn")
    assert evaluate_main(["--run-dir", str(tmp_path)]) == 0  # figures into RUN/images
    out = capsys.readouterr().out
    record = json.loads((tmp_path / E.RESULTS).read_text())
    assert record["preset"] == "cnn" and record["pose"] is None and record["targets"] is None
    assert sorted(p.stem for p in (tmp_path / "images").iterdir()) == sorted(FIGURES)
    assert "no transformer" in out and "skipped" in out
