"""3-D MNIST (stn.data.volumes, stn.volume_model, experiments.volumes): analytic cases, tiny run."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from stn import volume_model as M
from stn.data import volumes as V

RNG = np.random.default_rng(0)


def digits(n=3):
    return RNG.integers(0, 256, (n, V.DIGIT, V.DIGIT)).astype(np.uint8)


def test_an_upright_plate_projects_to_the_padded_digit_times_its_thickness():
    d = digits()
    volumes = np.asarray(V.render(d, V.upright_poses(3)))[..., 0]  # (3, 60, 60, 60)
    pad = (V.CANVAS - V.DIGIT) // 2
    expected = np.pad(d / 255.0, ((0, 0), (pad, pad), (pad, pad))) * V.THICKNESS
    np.testing.assert_allclose(volumes.sum(axis=1), expected, rtol=0, atol=1e-5)
    assert np.sum(volumes.sum(axis=(2, 3))[0] > 1e-4) == V.THICKNESS  # 4 slices deep


def test_a_rigid_pose_keeps_the_digits_mass():
    d = digits()
    volumes = np.asarray(V.render(d, V.random_poses(3, RNG)))
    np.testing.assert_allclose(volumes.sum(axis=(1, 2, 3, 4)), d.sum(axis=(1, 2)) / 255.0
                               * V.THICKNESS, rtol=0.02)


def test_every_pose_keeps_the_plate_inside_the_canvas():
    poses = V.random_poses(2000, RNG).reshape(-1, 3, 4).astype(np.float64)
    # The plate's corners in its own normalized coordinates, mapped to canvas voxels.
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T  # (8, 3)
    square = np.concatenate([poses, np.tile([[[0, 0, 0, 1.0]]], (len(poses), 1, 1))], axis=1)
    to_plate = np.linalg.inv(square)  # plate -> canvas, normalized
    canvas = np.einsum("nij,mj->nmi", to_plate[:, :3, :3], corners) + to_plate[:, None, :3, 3]
    assert np.abs(canvas).max() < 1.0  # inside the +-1 faces
    assert np.abs(canvas).max() > 0.8  # and the ranges reach near them


def test_splits_are_a_pure_function_of_the_seed():
    mnist = ((digits(6000), np.arange(6000) % 10), (digits(20), np.arange(20) % 10))
    a = V.make_splits(mnist, seed=3)
    b = V.make_splits(mnist, seed=3, limits={"test": 5})
    c = V.make_splits(mnist, seed=4)
    np.testing.assert_array_equal(a["test"].poses[:5], b["test"].poses)
    assert not np.allclose(a["test"].poses, c["test"].poses)
    assert len(a["validation"].labels) == V.VALIDATION_SIZE and len(a["train"].labels) == 1000
    assert not np.allclose(V.epoch_poses(10, 0, 0), V.epoch_poses(10, 0, 1))


def test_the_two_models_have_the_same_parameter_count_and_start_alike():
    st, baseline = M.build_st(), M.build_baseline()
    assert abs(st.count_params() - baseline.count_params()) <= 0.01 * st.count_params()
    assert st.get_layer("transformer").count_params() > 10_000  # the localization net
    volumes = np.asarray(V.render(digits(2), V.random_poses(2, RNG)))
    # At the identity the ST's projection is the baseline's 2x2-averaged one (up to the
    # depth sampling, 20 rays' samples 3 voxels apart against the 4-voxel plate).
    import keras
    ours = keras.Model(st.inputs, st.get_layer("projection").output).predict(volumes, verbose=0)
    theirs = keras.Model(baseline.inputs, baseline.get_layer("downsample").output).predict(
        volumes, verbose=0)
    assert ours.shape == theirs.shape == (2, M.OUTPUT_SIZE, M.OUTPUT_SIZE, 1)
    assert np.abs(ours.sum() - theirs.sum()) < 0.05 * theirs.sum()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from experiments import volumes as E
    out = tmp_path_factory.mktemp("volumes")
    paths = dict(run_dir=out / "runs", json_path=out / "volumes.json", figure=out / "v.png")
    record = E.run(E.TINY, **paths)
    return record, paths


def test_the_tiny_run_writes_its_record_and_figure(tiny_run):
    record, paths = tiny_run
    saved = json.loads(paths["json_path"].read_text())
    assert saved == json.loads(json.dumps(record))
    for name in ("st", "baseline"):
        unit = saved["models"][name]
        assert 0.0 <= unit["test_error"] <= 1.0 and unit["steps"] == 4
        assert np.isfinite(unit["history"][0]["train_loss"])
        assert (paths["run_dir"] / name / "model.keras").exists()
    assert saved["protocol"]["thickness"] == V.THICKNESS and saved["cpu"]
    assert paths["figure"].stat().st_size > 10_000


def test_a_finished_unit_is_read_back_not_trained_again(tiny_run):
    from experiments import volumes as E
    record, paths = tiny_run
    model_file = paths["run_dir"] / "st" / "model.keras"
    before = model_file.stat().st_mtime_ns
    again = E.run(E.TINY, **paths, models=("st",))
    assert model_file.stat().st_mtime_ns == before
    assert again["models"]["st"] == json.loads(json.dumps(record["models"]["st"]))


def test_a_finished_unit_of_another_plan_is_refused(tiny_run, capsys):
    from experiments import volumes as E
    _, paths = tiny_run
    before = {p: p.stat().st_mtime_ns for p in paths["run_dir"].rglob("*") if p.is_file()}
    argv = ["--tiny", "--epochs", "2", "--run-dir", str(paths["run_dir"]), "--json",
            str(paths["json_path"]), "--figure", str(paths["figure"])]
    E.main(argv)  # --tiny's plan: the same as the run's, read back
    with pytest.raises(SystemExit) as exit_info:
        E.main(["--epochs", "2", *argv[3:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ("holds a finished st unit of another plan (batch_size: 8 there, 64 now; "
            "epochs: 1 there, 2 now; ") in err
    assert "pass another --run-dir" in err
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing trained or written


def test_the_screen_rule_prefers_the_smaller_scale_within_its_margin():
    from experiments import volumes as E

    def rows(*errors):
        return [{"localization_lr_scale": s, "validation_error_percent": e}
                for s, e in zip(E.SCREENS["localization-rate"][1], errors)]

    assert E.choose(rows(10.5, 8.0, 9.0)) == 3.0
    assert E.choose(rows(10.5, 8.0, 7.8)) == 3.0  # 0.2 point better: not enough
    assert E.choose(rows(10.5, 8.0, 7.6)) == 10.0
    assert E.choose(rows(8.1, 8.0, 9.0)) == 1.0


def test_the_tiny_screen_reads_the_default_back_and_trains_the_rest_on_validation(tiny_run):
    from experiments import volumes as E
    record, paths = tiny_run
    out = paths["json_path"].parent / "screen.json"
    runs_dir = paths["json_path"].parent / "screen_runs"
    screen = E.screen(E.TINY, runs_dir, paths["json_path"], out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(screen))
    variants = screen["variants"]
    assert [v["localization_lr_scale"] for v in variants] == list(E.SCREENS["localization-rate"][1])
    assert variants[0]["run"] == str(paths["json_path"])  # the study's own ST run (outside the repo)
    assert variants[0]["validation_error_percent"] == round(
        100 * record["models"]["st"]["history"][-1]["validation_error"], 2)
    for v in variants[1:]:
        metrics = json.loads((Path(v["run"]) / "metrics.json").read_text())
        assert metrics["test_error"] is None  # a choice on validation
        assert json.loads((Path(v["run"]) / "config.json").read_text())["plan"][
            "localization_lr_scale"] == v["localization_lr_scale"]
    assert screen["chosen"] == E.choose(variants)


def test_a_pose_curriculum_scales_the_same_draws():
    full, none, half = (V.epoch_poses(64, 0, 1, s) for s in (1.0, 0.0, 0.5))
    np.testing.assert_allclose(none, V.upright_poses(64), atol=1e-6)  # upright and centred
    # The same draws at half the angles and shifts.
    rng = np.random.default_rng(7)
    tilts = np.deg2rad(rng.uniform(-V.TILT_DEG, V.TILT_DEG, (2, 64)))
    in_plane = np.deg2rad(rng.uniform(-V.IN_PLANE_DEG, V.IN_PLANE_DEG, 64))
    shifts = rng.uniform(-V.SHIFT_VOXELS, V.SHIFT_VOXELS, (64, 3))
    expected = V.pose_params(V.rotation(tilts[0] / 2, tilts[1] / 2, in_plane / 2), shifts / 2)
    np.testing.assert_allclose(V.random_poses(64, np.random.default_rng(7), 0.5), expected,
                               atol=1e-6)
    assert not np.allclose(half, full)
    np.testing.assert_array_equal(V.epoch_poses(64, 0, 1), full)  # strength 1: as before


def test_the_pose_ramp_screen_trains_its_variants_with_growing_poses(tiny_run, monkeypatch):
    from experiments import volumes as E
    record, paths = tiny_run
    seen = []
    real = V.epoch_poses
    monkeypatch.setattr(V, "epoch_poses", lambda n, seed, epoch, strength=1.0: (
        seen.append(strength), real(n, seed, epoch, strength))[1])
    plan = dataclasses.replace(E.TINY, epochs=2)
    out = paths["json_path"].parent / "screen_pose.json"
    screen = E.screen(plan, paths["json_path"].parent / "pose_runs", paths["json_path"], out,
                      name="pose-ramp")
    assert [v["pose_ramp_epochs"] for v in screen["variants"]] == [0.0, 1.0, 2.0]
    # ramp 0: full poses; 1: upright, then full; 2: upright, then half.
    assert seen == [1.0, 1.0, 0.0, 1.0, 0.0, 0.5]
    assert screen["chosen"] == E.choose(screen["variants"], "pose_ramp_epochs")


def test_axis_projections_are_the_volume_summed_along_each_axis():
    volumes = np.random.default_rng(0).random((2, 6, 6, 6, 1)).astype(np.float32)
    got = np.asarray(M.AxisProjections()(volumes))
    assert got.shape == (2, 6, 6, 3)
    for channel, axis in enumerate((1, 2, 3)):
        np.testing.assert_allclose(got[..., channel], volumes[..., 0].sum(axis=axis), rtol=1e-6)


def test_the_projections_net_starts_at_the_identity_and_keeps_the_counts_matched():
    st = M.build_st(localization="projections")
    baseline = M.build_baseline(localization="projections")
    assert abs(st.count_params() - baseline.count_params()) <= 0.01 * st.count_params()
    theta = st.get_layer("transformer").localization(np.zeros((1, 60, 60, 60, 1), np.float32))
    np.testing.assert_allclose(np.asarray(theta)[0],
                               np.eye(3, 4).reshape(-1), atol=1e-6)
    with pytest.raises(ValueError, match="localization must be one of"):
        M.build_st(localization="dense")


def test_the_localization_screen_names_its_runs_and_keeps_the_current_net_on_a_tie(
        tiny_run):
    from experiments import volumes as E
    record, paths = tiny_run
    out = paths["json_path"].parent / "screen_loc.json"
    runs_dir = paths["json_path"].parent / "loc_runs"
    screen = E.screen(E.TINY, runs_dir, paths["json_path"], out, name="localization")
    assert [v["localization"] for v in screen["variants"]] == ["conv3d", "projections"]
    assert E.LOCALIZERS == tuple(M.LOCALIZERS)  # the runner's names are the builder's
    assert E.HEADS == M.HEADS
    assert E.TINY.localization == "projections"  # the default: read from the study's record
    assert screen["variants"][1]["run"] == str(paths["json_path"])
    config = json.loads((runs_dir / "loc-conv3d" / "st" / "config.json").read_text())
    assert config["plan"]["localization"] == "conv3d"
    assert "the earlier of" in screen["rule"]
    rows = [{"localization": n, "validation_error_percent": e}
            for n, e in (("conv3d", 10.0), ("projections", 9.8))]
    assert E.choose(rows, "localization") == "conv3d"  # 0.2 point: within the margin
    rows[1]["validation_error_percent"] = 9.6
    assert E.choose(rows, "localization") == "projections"


def test_a_record_from_before_the_localization_field_is_the_conv3d_nets(tmp_path):
    from experiments import volumes as E
    from stn.train import runs

    old = {k: v for k, v in dataclasses.asdict(E.Plan()).items() if k != "localization"}
    assert E.kept_plan(old)["localization"] == "conv3d"
    one_pass = {k: v for k, v in dataclasses.asdict(E.Plan()).items() if k != "iterations"}
    assert E.kept_plan(one_pass)["iterations"] == 1 != E.Plan().iterations
    unit = tmp_path / "st"
    unit.mkdir()
    (unit / "metrics.json").write_text("{}")
    (unit / "config.json").write_text(json.dumps({"plan": old}))
    with pytest.raises(runs.RunError, match="localization"):
        E.check_plan("st", E.Plan(), unit)  # the default plan is the projections net's
    E.check_plan("st", dataclasses.replace(E.Plan(), localization="conv3d"), unit)


def test_the_iterations_screen_refines_the_st_models_map(tiny_run):
    import keras

    from experiments import volumes as E
    record, paths = tiny_run
    out = paths["json_path"].parent / "screen_iterations.json"
    runs_dir = paths["json_path"].parent / "iter_runs"
    screen = E.screen(E.TINY, runs_dir, paths["json_path"], out, name="iterations")
    assert [v["iterations"] for v in screen["variants"]] == [1, 2]
    assert screen["variants"][1]["run"] == str(paths["json_path"])  # the study's, read back
    model = keras.saving.load_model(runs_dir / "iter-1" / "st" / "model.keras")
    assert model.get_layer("transformer").iterations == 1
    assert M.build_st(iterations=2).count_params() == M.build_st().count_params()  # one net


def test_the_baselines_finished_unit_serves_any_st_only_field(tiny_run):
    from experiments import volumes as E
    from stn.train import runs
    _, paths = tiny_run
    other = dataclasses.replace(E.TINY, iterations=1, localization_lr_scale=3.0)
    E.check_plan("baseline", other, paths["run_dir"] / "baseline")  # the baseline reads neither
    with pytest.raises(runs.RunError, match="finished st unit of another plan"):
        E.check_plan("st", other, paths["run_dir"] / "st")


def test_an_interrupted_unit_resumes_after_its_last_finished_epoch(tiny_run, tmp_path, monkeypatch):
    from experiments import volumes as E
    from stn.train import runs
    plan = dataclasses.replace(E.TINY, epochs=2)
    whole = E.run(plan, tmp_path / "whole", tmp_path / "whole.json", tmp_path / "w.png",
                  models=("baseline",))["models"]["baseline"]
    paths = dict(run_dir=tmp_path / "cut", json_path=tmp_path / "cut.json", figure=tmp_path / "c.png")
    unit = paths["run_dir"] / "baseline"
    error_rate, calls = E.error_rate, []

    def stop_at_the_second_validation(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return error_rate(*args)

    monkeypatch.setattr(E, "error_rate", stop_at_the_second_validation)
    with pytest.raises(KeyboardInterrupt):
        E.run(plan, **paths, models=("baseline",))
    monkeypatch.setattr(E, "error_rate", error_rate)
    saved = json.loads((unit / E.PROGRESS).read_text())
    assert len(saved["history"]) == 1 and not (unit / "metrics.json").exists()
    assert not (unit / runs.LOCK).exists()  # let go however the process left
    with pytest.raises(runs.RunError, match="unfinished baseline unit of another plan"):
        E.run(dataclasses.replace(plan, epochs=3), **paths, models=("baseline",))
    # Metrics of fewer epochs than the checkpoint holds: refused, nothing changed.
    (unit / E.PROGRESS).write_text(json.dumps({**saved, "history": []}))
    with pytest.raises(runs.RunError, match="saved after epoch 1 but the metrics of only 0"):
        E.run(plan, **paths, models=("baseline",))
    (unit / E.PROGRESS).write_text(json.dumps(saved))
    resumed = E.run(plan, **paths, models=("baseline",))["models"]["baseline"]
    assert resumed["resumed_after"] == 1 and resumed["steps"] == whole["steps"] == 8
    assert resumed["history"][0] == saved["history"][0]
    # The second epoch starts from the first's weights and optimizer state: as if never cut.
    assert resumed["history"][1]["train_loss"] == pytest.approx(whole["history"][1]["train_loss"],
                                                                rel=1e-4)
    assert resumed["test_error"] == whole["test_error"]


def test_the_plates_tilt_is_its_normals_angle_to_depth_through_the_map():
    rotations = V.rotation(np.deg2rad([0.0, 40.0, 0.0]), np.deg2rad([0.0, 0.0, 30.0]),
                           np.deg2rad([70.0, 0.0, -20.0]))
    poses = V.pose_params(rotations, RNG.uniform(-5, 5, (3, 3)))
    # In the canvas: a turn in the plane (about depth) tilts nothing; about x or y, its angle.
    np.testing.assert_allclose(V.plate_tilt_deg(poses), [0.0, 40.0, 30.0], atol=1e-9)
    identity = np.tile(np.eye(3, 4), (3, 1, 1)).reshape(3, 12)
    np.testing.assert_allclose(V.plate_tilt_deg(poses, identity), V.plate_tilt_deg(poses))
    # A map that rotates the output by the plate's own rotation (and zooms) sees it face-on.
    turned = np.concatenate([0.5 * rotations, np.zeros((3, 3, 1))], axis=2).reshape(3, 12)
    np.testing.assert_allclose(V.plate_tilt_deg(poses, turned), 0.0, atol=1e-6)
    # Shearing and scaling the output's height and width, the view along depth kept: the
    # same angle (the projection is the same image, warped in the plane).
    sheared = np.tile([[0.7, 0.3, 0.0, 0.1], [-0.2, 1.3, 0.0, 0.0], [0.0, 0.0, 0.5, 0.2]],
                      (3, 1, 1)).reshape(3, 12)
    np.testing.assert_allclose(V.plate_tilt_deg(poses, sheared), V.plate_tilt_deg(poses))


def test_the_tiny_runs_record_says_how_far_the_st_turns_the_plates(tiny_run):
    record, _ = tiny_run
    tilt = record["tilt"]
    assert tilt["digits"] == 16 and 0.0 <= tilt["turned_toward_face_on"] <= 1.0
    assert 0.0 < tilt["input_mean_deg"] < 90.0 and 0.0 <= tilt["output_mean_deg"] <= 90.0
    # Each model's errors by the input's tilt add up to its test error.
    counts = np.array(tilt["digits_by_bin"])
    assert counts.sum() == 16 and len(counts) == len(tilt["bins_deg"]) - 1
    for name in ("st", "baseline"):
        by_bin = np.array([e if e is not None else 0.0 for e in tilt["error_by_bin"][name]])
        assert np.sum(by_bin * counts) / 16 == pytest.approx(record["models"][name]["test_error"],
                                                             abs=1e-4)  # bins rounded to 4 places


def test_the_similarity_head_is_rodrigues_rotation_scale_and_shift():
    from scipy.spatial.transform import Rotation

    params = np.concatenate([RNG.normal(0, 1.0, (5, 3)), RNG.normal(0, 0.3, (5, 1)),
                             RNG.normal(0, 0.5, (5, 3))], axis=1).astype(np.float32)
    params[0] = 0.0  # the identity
    got = np.asarray(M.Similarity3D()(params)).reshape(-1, 3, 4)
    linear = np.exp(params[:, 3])[:, None, None] * Rotation.from_rotvec(params[:, :3]).as_matrix()
    want = np.concatenate([linear, params[:, 4:, None]], axis=2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got[0], np.eye(3, 4))


def test_the_similarity_heads_gradient_at_the_identity_is_the_rotations_generators():
    import tensorflow as tf

    zero = tf.zeros((1, 7))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(zero)
        theta = M.Similarity3D()(zero)[0]
        entries = [theta[k] for k in range(12)]
    jacobian = np.stack([tape.gradient(e, zero).numpy()[0] for e in entries])  # [12, 7]
    # d(R p)/d r_x at r = 0 is the cross-product matrix of x: entries (2, 1) = 1, (1, 2) = -1.
    rx = jacobian[:, 0].reshape(3, 4)
    np.testing.assert_allclose(rx[:, :3], [[0, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(jacobian[:, 3].reshape(3, 4)[:, :3], np.eye(3), atol=1e-6)
    assert np.all(np.isfinite(jacobian))


def test_an_st_model_with_the_similarity_head_starts_at_the_identity_and_saves(tmp_path):
    import keras

    model = M.build_st(head="similarity", iterations=2)
    layer = model.get_layer("transformer")
    volumes = np.asarray(V.render(digits(2), V.random_poses(2, RNG)))
    np.testing.assert_allclose(np.asarray(layer.params(volumes)),
                               np.tile(np.eye(3, 4).ravel(), (2, 1)), atol=1e-6)
    assert 0 < M.build_st().count_params() - model.count_params() < 200  # 7 outputs, not 12
    model.save(tmp_path / "s.keras")
    again = keras.saving.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(again.predict(volumes, verbose=0), model.predict(volumes, verbose=0),
                               atol=1e-5)
    with pytest.raises(ValueError, match="head must be one of"):
        M.build_st(head="rigid")


def test_the_head_screen_trains_the_similarity_head(tiny_run):
    import keras

    from experiments import volumes as E
    _, paths = tiny_run
    runs_dir = paths["json_path"].parent / "head_runs"
    screen = E.screen(E.TINY, runs_dir, paths["json_path"], paths["json_path"].parent / "h.json",
                      name="head")
    assert [v["head"] for v in screen["variants"]] == ["affine", "similarity"]
    assert screen["variants"][0]["run"] == str(paths["json_path"])  # the study's, read back
    model = keras.saving.load_model(runs_dir / "head-similarity" / "st" / "model.keras")
    localization = model.get_layer("transformer").localization
    assert isinstance(localization.layers[-1], M.Similarity3D)


def spread_reference(volumes, theta):
    """view_spread by numpy: the ink-weighted covariance of the voxel centres' (x, y, z)."""
    b, d, h, w = volumes.shape[:4]
    z, y, x = np.meshgrid(*[(2 * np.arange(n) + 1) / n - 1 for n in (d, h, w)], indexing="ij")
    points = np.stack([x, y, z], -1).reshape(-1, 3)
    out = []
    for ink, t in zip(volumes.reshape(b, -1).astype(np.float64), theta):
        cov = np.cov(points.T, aweights=ink, bias=True)
        u = t.reshape(3, 4)[:, 2] / np.linalg.norm(t.reshape(3, 4)[:, 2])
        out.append(u @ cov @ u / np.trace(cov))
    return np.array(out)


def test_view_spread_is_the_ink_spread_along_the_view_over_its_total():
    volumes = RNG.uniform(size=(3, 6, 7, 5, 1)).astype(np.float32) ** 4
    theta = (np.eye(3, 4).ravel() + RNG.normal(0, 0.5, (3, 12))).astype(np.float32)
    np.testing.assert_allclose(np.asarray(M.view_spread(volumes, theta)),
                               spread_reference(volumes, theta), rtol=1e-4)


def test_view_spread_is_least_looking_at_a_plate_face_on():
    poses = V.random_poses(4, RNG)
    volumes = np.asarray(V.render(digits(4), poses))
    normal = poses.reshape(-1, 3, 4)[:, 2, :3]  # the plate's normal in the canvas
    face_on = np.tile(np.eye(3, 4), (4, 1, 1))
    face_on[:, :, 2] = normal / np.linalg.norm(normal, axis=1, keepdims=True)
    face_on = face_on.reshape(4, 12).astype(np.float32)
    identity = np.tile(np.eye(3, 4).ravel(), (4, 1)).astype(np.float32)
    least = np.asarray(M.view_spread(volumes, face_on))
    assert np.all(least < 0.06)  # the thickness against the digit's spread in the plane
    tilted = V.plate_tilt_deg(poses) > 20
    assert np.all(np.asarray(M.view_spread(volumes, identity))[tilted] > 2 * least[tilted])
    for _ in range(20):  # no direction is thinner than the normal (within the sampling)
        other = identity.copy().reshape(4, 3, 4)
        other[:, :, 2] = RNG.normal(size=(4, 3))
        assert np.all(np.asarray(M.view_spread(volumes, other.reshape(4, 12))) >= least - 1e-3)


def test_the_view_prior_adds_its_term_in_training_only_and_saves(tmp_path):
    import keras
    import tensorflow as tf

    model = M.build_st(view_prior=2.0)
    layer = model.get_layer("transformer")
    assert isinstance(layer, M.ViewPriorTransformer)
    poses = V.random_poses(2, RNG)
    volumes = np.asarray(V.render(digits(2), poses))
    plain = M.build_st()
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(volumes, verbose=0), plain.predict(volumes, verbose=0),
                               atol=1e-5)  # the same model's outputs
    model(volumes, training=False)
    assert not model.losses
    identity = np.tile(np.eye(3, 4).ravel(), (2, 1)).astype(np.float32)
    with tf.GradientTape() as tape:
        model(volumes, training=True)
        (prior,) = model.losses
    np.testing.assert_allclose(float(prior), 2.0 * np.mean(spread_reference(volumes, identity)),
                               rtol=1e-4)  # at the identity, the canvas's depth axis
    bias = layer.localization.layers[-1].bias
    assert np.abs(tape.gradient(prior, bias).numpy()).max() > 0  # it reaches the map
    losses = []
    for net in (model, plain):  # the training step's loss carries it
        net.compile(keras.optimizers.SGD(0.0),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses.append(float(net.train_on_batch(volumes, np.array([1, 2]))))
    np.testing.assert_allclose(losses[0] - losses[1], float(prior), rtol=1e-3)
    model.save(tmp_path / "v.keras")
    again = keras.saving.load_model(tmp_path / "v.keras")
    assert again.get_layer("transformer").view_prior == 2.0
    with pytest.raises(ValueError, match="view_prior must be positive"):
        M.ViewPriorTransformer(M.projection_localization(), view_prior=-1.0, kind="affine3d")


def test_the_plans_view_prior_reaches_the_st_model_and_spares_the_baseline(
        tiny_run, monkeypatch, tmp_path):
    from experiments import volumes as E
    _, paths = tiny_run
    plan = dataclasses.replace(E.TINY, view_prior=1.0)
    E.check_plan("baseline", plan, paths["run_dir"] / "baseline")  # the baseline's unit serves
    with pytest.raises(Exception, match="another plan"):
        E.check_plan("st", plan, paths["run_dir"] / "st")
    seen = {}

    def builder(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("built")

    monkeypatch.setitem(M.BUILDERS, "st", builder)
    with pytest.raises(RuntimeError, match="built"):
        E._train("st", {}, plan, tmp_path, test=False)
    assert seen["view_prior"] == 1.0 and seen["iterations"] == plan.iterations
    assert E.SCREENS["view-prior"][:2] == ("view_prior", (0.0, 1.0, 10.0))


def test_tilt_of_prints_each_run_dirs_view_on_validation(tiny_run, capsys):
    from experiments import volumes as E
    from stn.data import mnist
    _, paths = tiny_run
    capsys.readouterr()
    E.main(["--tiny", "--tilt-of", str(paths["run_dir"])])
    (line,) = capsys.readouterr().out.strip().splitlines()
    view = json.loads(line)
    assert view["split"] == "validation" and 0 <= view["output_mean_deg"] <= 90
    sizes = {"train": E.TINY.train_size, "validation": E.TINY.validation_size}
    poses = V.make_splits(mnist.load_mnist(), E.TINY.seed, sizes)["validation"].poses
    assert view["input_mean_deg"] == round(float(np.mean(V.plate_tilt_deg(poses))), 2)
