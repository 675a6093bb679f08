"""MNIST addition: parallel transformers in the model builder, the pairs dataset, the
channel-focus measure, the figure, and experiments.addition on a tiny run."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from stn.data import addition, datasets, protocols
from stn.data.pipeline import pad
from stn.layer import kinds
from stn.layer import transform as T
from stn.train import config as C
from stn.model import build_model, find_transformer, find_transformers, transformer_outputs

RNG = np.random.default_rng(11)


def addition_model(preset="st-fcn-affine", **overrides):
    config = C.make_config(preset, "rts", dataset="addition", **overrides)
    return build_model(config.model)


def perturb(layer, rng, scale=0.05):
    """Moves a transformer's localization net off the identity, with its own draws."""
    for variable in layer.localization.trainable_variables:
        variable.assign(variable + rng.normal(0, scale, variable.shape).astype(np.float32))


# --- the model builder --------------------------------------------------------------

def test_one_transformer_is_todays_model_and_the_pretrained_model_loads_unchanged():
    # pretrained/ was saved by the builder before parallel transformers: the same
    # config must build the same layers, and its weights give the same logits.
    record = json.loads((helpers.ROOT / "pretrained/st-cnn-affine_rts.json").read_text())
    saved = keras.saving.load_model(helpers.ROOT / "pretrained/st-cnn-affine_rts.keras")
    config = C.config_from_dict(record["config"])
    assert (config.model.transformers, config.model.channels, config.model.classes) == (1, 1, 10)
    built = build_model(config.model)
    assert [(type(la).__name__, la.name) for la in built.layers] == [
        (type(la).__name__, la.name) for la in saved.layers]
    assert [v.shape for v in built.weights] == [v.shape for v in saved.weights]
    built.set_weights(saved.get_weights())
    images = RNG.random((6, 42, 42, 1)).astype(np.float32)
    np.testing.assert_array_equal(built(images), saved(images))
    assert find_transformer(saved).name == "transformer"
    np.testing.assert_array_equal(transformer_outputs(built, images)[1],
                                  transformer_outputs(saved, images, index=0)[1])


def test_each_parallel_transformer_warps_all_channels_by_its_own_parameters():
    keras.utils.set_random_seed(4)
    model = addition_model(transformers=3, transformer_output_size=28, dense_units=8,
                           localization_units=(8,))
    layers = find_transformers(model)
    assert [la.name for la in layers] == ["transformer_1", "transformer_2", "transformer_3"]
    rng = np.random.default_rng(0)
    for layer in layers:
        perturb(layer, rng)
    images = RNG.random((5, 42, 42, 2)).astype(np.float32)
    joined = keras.Model(model.inputs, model.get_layer("transformers").output)(images).numpy()
    assert joined.shape == (5, 28, 28, 6)
    thetas = []
    for k, layer in enumerate(layers):
        theta = layer.localization(images, training=False).numpy()  # its own net alone
        want = T.bilinear_sample(images, kinds.KINDS["affine"].tf_grid(theta, 28, 28)).numpy()
        params, out = transformer_outputs(model, images, batch_size=2, index=k)
        np.testing.assert_allclose(params, theta, atol=1e-6)
        np.testing.assert_allclose(out, want, atol=4e-5)
        # The classifier reads transformer k's C channels at k * C.
        np.testing.assert_allclose(joined[..., 2 * k:2 * k + 2], want, atol=4e-5)
        thetas.append(theta)
    assert np.abs(thetas[0] - thetas[1]).max() > 1e-3  # separate nets, separate maps


def test_parallel_transformers_parameter_count_by_hand():
    # Two ST-FCN localization nets on 42 x 42 x 2, then the FCN on 28 x 28 x 4.
    def dense(n_in, n_out):
        return n_in * n_out + n_out

    localization = dense(42 * 42 * 2, 32) + 2 * dense(32, 32) + dense(32, 6)
    classifier = dense(28 * 28 * 4, 56) + dense(56, 56) + dense(56, 19)
    model = addition_model(transformers=2, transformer_output_size=28, dense_units=56)
    assert model.count_params() == 2 * localization + classifier
    assert model.input_shape == (None, 42, 42, 2) and model.output_shape == (None, 19)


def test_find_transformer_forms_and_errors():
    two = addition_model(transformers=2)
    with pytest.raises(ValueError, match="2 parallel transformers: pass index"):
        find_transformer(two)
    with pytest.raises(ValueError, match="pass index"):
        transformer_outputs(two, np.zeros((1, 42, 42, 2), np.float32))
    assert find_transformer(two, 1).name == "transformer_2"
    with pytest.raises(ValueError, match="index 2 out of range"):
        find_transformer(two, 2)
    plain = addition_model("paper-cnn")
    assert find_transformer(plain) is None and find_transformers(plain) == []
    with pytest.raises(ValueError, match="transformers > 1 needs a model with a transformer"):
        C.model_config("paper-cnn", transformers=2)
    with pytest.raises(ValueError, match="transformers must be positive"):
        C.model_config("paper", transformers=0)


def test_parallel_model_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(2)
    model = addition_model("st-cnn-affine", transformers=2, transformer_output_size=28,
                           conv_filters=(4, 4))
    rng = np.random.default_rng(1)
    for layer in find_transformers(model):
        perturb(layer, rng, 0.01)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    images = RNG.random((3, 42, 42, 2)).astype(np.float32)
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6, atol=1e-6)
    for k in range(2):
        np.testing.assert_array_equal(transformer_outputs(loaded, images, index=k)[1],
                                      transformer_outputs(model, images, index=k)[1])


# --- configs --------------------------------------------------------------------------

def test_the_dataset_sizes_the_model_and_old_configs_read_with_defaults():
    config = C.make_config("paper-cnn", "rts", dataset="addition")
    assert (config.model.channels, config.model.classes, config.dataset) == (2, 19, "addition")
    assert C.config_from_dict(C.config_to_dict(config)) == config
    with pytest.raises(ValueError, match="has 2 channel.*use make_config"):
        C.Config(model=C.model_config("paper-cnn", input_size=42), protocol="rts",
                 dataset="addition")
    with pytest.raises(ValueError, match="unknown dataset"):
        C.make_config("paper-cnn", "rts", dataset="sums")
    old = C.config_to_dict(C.make_config("paper", "rts"))
    del old["dataset"]
    for key in ("transformers", "channels", "classes"):
        del old["model"][key]
    assert C.config_from_dict(old) == C.make_config("paper", "rts")
    assert datasets.model_fields("digits") == {"channels": 1, "classes": 10}


# --- the dataset ----------------------------------------------------------------------

def synthetic_mnist(n_train=5060, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    digits = (rng.random((n_train + n_test, 28, 28)) * 255).astype(np.uint8)
    labels = rng.integers(0, 10, n_train + n_test)
    return ((digits[:n_train], labels[:n_train]), (digits[n_train:], labels[n_train:]))


@pytest.fixture(scope="module")
def pairs():
    mnist = synthetic_mnist()
    return mnist, addition.build_data(mnist, "rts", seed=3, max_train_examples=30)


def test_pairs_come_from_their_own_split_and_are_labelled_by_their_sum(pairs):
    ((x_train, y_train), (x_test, y_test)), data = pairs
    for split, (x, y) in ((data.train, (x_train[5000:], y_train[5000:])),
                          (data.validation, (x_train[:5000], y_train[:5000])),
                          (data.test, (x_test, y_test))):
        np.testing.assert_array_equal(split.digits, x)  # every pair indexes these digits
        assert split.pairs.min() >= 0 and split.pairs.max() < len(x)
        np.testing.assert_array_equal(split.labels, y[split.pairs[:, 0]] + y[split.pairs[:, 1]])
        assert split.images.shape == (len(split), 42, 42, 2)
    assert len(data.train) == 30 and len(data.test) == 40
    # Each digit is once a first and once a second digit of its split.
    np.testing.assert_array_equal(np.sort(data.test.pairs[:, 1]), np.arange(40))


def test_each_channel_is_its_digit_warped_by_its_own_rts_draw(pairs):
    from stn.data import warps

    _, data = pairs
    test = data.test
    for c in range(2):
        canonical = pad(test.digits[test.pairs[:, c]], 42)
        want = kinds.warp(canonical, test.warps[:, c], "affine").numpy()[..., 0]
        np.testing.assert_allclose(test.images[..., c], want, atol=1e-5)
    pose = warps.decompose(test.warps.reshape(-1, 6), 42)
    assert np.abs(pose["rotation"]).max() <= 45 + 1e-6
    assert 0.7 - 1e-9 <= pose["scale"].min() and pose["scale"].max() <= 1.2 + 1e-9
    assert np.abs(pose["tx"]).max() <= 7 + 1e-6 and np.abs(pose["ty"]).max() <= 7 + 1e-6
    assert np.abs(pose["rotation"][0::2] - pose["rotation"][1::2]).min() > 0  # independent


def test_the_test_split_is_a_pure_function_of_the_seed(pairs):
    mnist, data = pairs
    again = addition.build_data(mnist, "rts", seed=3, max_train_examples=10)
    np.testing.assert_array_equal(again.test.images, data.test.images)
    np.testing.assert_array_equal(again.train.images, data.train.images[:10])
    other = addition.build_data(mnist, "rts", seed=4, max_train_examples=10)
    head = addition.build_data(mnist, "rts", seed=3, max_eval_examples=5)  # a smoke run's
    np.testing.assert_array_equal(head.validation.images, data.validation.images[:5])
    np.testing.assert_array_equal(head.test.labels, data.test.labels[:5])
    assert not np.array_equal(other.test.images, data.test.images)


def test_resampled_epochs_are_fresh_pairs_warped_as_the_fixed_ones(pairs):
    _, data = pairs
    protocol = protocols.get_protocol("rts")
    batches = list(addition.train_dataset(data.train, 8, seed=5, epoch=2, resample=True))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    from stn.data.pipeline import epoch_order

    order = epoch_order(len(data.train), 5, 2)
    pairs_, warps = addition.epoch_pairs(data.train, 5, 2, protocol)
    want = addition.warp_pairs(data.train.digits, pairs_, warps, protocol)[order]
    np.testing.assert_allclose(images, want, atol=1e-5)
    np.testing.assert_array_equal(labels, data.train.digit_labels[pairs_].sum(1)[order])
    np.testing.assert_array_equal(pairs_[:, 0], data.train.pairs[:, 0])  # first digits kept
    assert not np.array_equal(pairs_[:, 1], data.train.pairs[:, 1])
    other = addition.epoch_pairs(data.train, 5, 3, protocol)[0]
    assert not np.array_equal(other, pairs_)
    fixed = np.concatenate([b[0].numpy() for b in addition.eval_dataset(data.train, 7)])
    np.testing.assert_array_equal(fixed, data.train.images)


# --- what each transformer settles on --------------------------------------------------

def test_channel_focus_of_transformers_that_read_one_channel_each():
    from stn.analysis.channel_focus import channel_focus

    keras.utils.set_random_seed(0)
    model = addition_model(transformers=2, transformer_output_size=28, dense_units=8,
                           localization_units=(16,))
    rng = np.random.default_rng(3)
    for k, layer in enumerate(find_transformers(model)):
        perturb(layer, rng, 0.02)
        first = layer.localization.layers[1]  # Dense after Flatten: inputs (y, x, c) c fastest
        kernel = first.kernel.numpy()
        kernel[1 - k::2] = 0.0  # transformer k sees only channel k
        first.kernel.assign(kernel)
    images = RNG.random((6, 42, 42, 2)).astype(np.float32)
    focus = channel_focus(model, images)
    for k, f in enumerate(focus):
        assert f["settled_on"] == k and f["reliance"][k] == 1.0 and f["moved_px"][1 - k] == 0
        out = transformer_outputs(model, images, index=k)[1].sum(axis=(0, 1, 2))
        np.testing.assert_allclose(f["ink_share"], out / out.sum(), atol=1e-4)
    # An untrained (identity) transformer relies on no channel.
    fresh = channel_focus(addition_model(transformers=2), images)
    assert fresh[0]["reliance"] == [None, None] and fresh[0]["settled_on"] is None


def test_addition_figure_has_a_column_per_channel_of_each_image():
    from stn.viz.figures import addition_figure

    inputs = RNG.random((3, 42, 42, 2)).astype(np.float32)
    outputs = [RNG.random((3, 28, 28, 2)).astype(np.float32) for _ in range(2)]
    fig = addition_figure(inputs, outputs, np.array([3, 11, 18]), "t")
    assert len(fig.axes) == 3 * 2 * 3
    assert fig.axes[2].get_title() == "ST 1\nchannel 1"


# --- the experiment -------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_experiment_trains_records_reads_back_and_draws(tmp_path, capsys):
    from experiments import addition as study

    dirs = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--images-dir", str(tmp_path / "images")]
    args = ["--tiny", "--precision", "float32", "--models", "2xST-FCN", *dirs]
    assert study.main(args) == 0
    cells = json.loads((tmp_path / "results/addition.json").read_text())["cells"]
    assert [c["model"] for c in cells] == ["2xST-FCN"]
    cell = cells[0]
    config = study.model_config("2xST-FCN", **study.TINY)
    assert cell["parameters"] == build_model(config.model).count_params() > 0
    metrics = json.loads((tmp_path / "runs/2xst-fcn/metrics.json").read_text())
    assert cell["error_percent"] == round(100 * (1 - metrics["test_accuracy"]), 2)
    assert len(cell["focus"]) == 2 and all(len(f["ink_share"]) == 2 for f in cell["focus"])
    assert (tmp_path / "images/addition.png").stat().st_size > 0
    # A screen row's settling: each transformer's channel or None, from the run's model.
    unit = study.runner.Unit("2xST-FCN", config, tmp_path / "runs/2xst-fcn")
    settled = study._settled(unit, pairs=64)
    assert len(settled) == 2 and all(s in (None, 0, 1) for s in settled)
    assert study._settled(study.screen_unit("FCN", {}, tmp_path)) is None
    history = (tmp_path / "runs/2xst-fcn/history.csv").read_text()
    capsys.readouterr()
    assert study.main(args) == 0  # finished: read back, not trained again
    assert "2xST-FCN: done" in capsys.readouterr().out
    assert (tmp_path / "runs/2xst-fcn/history.csv").read_text() == history


def test_tiny_screen_reports_validation_only_and_reads_back(tmp_path, capsys):
    from experiments import addition as study

    out = tmp_path / "screen_addition.json"
    rows = study.run_screen(tmp_path / "runs", out, precision="float32", **study.TINY)
    assert json.loads(out.read_text())["variants"] == rows
    assert [(r["model"], r["changes"]) for r in rows] == study.SCREEN
    assert [r["learning_rate"] for r in rows] == [1e-3, 3e-3, 1e-2, 3e-3]
    for row in rows:
        metrics = json.loads((Path(row["run"]) / "metrics.json").read_text())
        assert "test_accuracy" not in metrics  # a choice on validation
        assert row["val_error_percent"] == round(100 * (1 - metrics["val_accuracy"]), 2)
    capsys.readouterr()
    assert study.run_screen(tmp_path / "runs", out, precision="float32", **study.TINY) == rows
    assert capsys.readouterr().out.count(": done, in") == len(rows)  # read back


def test_the_models_have_about_the_same_number_of_parameters():
    from experiments import addition as study

    counts = [build_model(study.model_config(m).model).count_params() for m in study.MODELS]
    assert max(counts) / min(counts) < 1.05, counts
    config = study.model_config("2xST-FCN")
    assert (config.dataset, config.protocol, config.model.transformers) == ("addition", "rts", 2)


def test_tiny_runs_need_directories_of_their_own(capsys):
    from experiments import addition as study

    with pytest.raises(SystemExit):
        study.parse_args(["--tiny", "--runs-dir", "elsewhere"])
    assert "--tiny needs --runs-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.parse_args(["--seed", "1", "--runs-dir", "r", "--results-dir", "s"])
    assert "--seed 1 needs --runs-dir" in capsys.readouterr().err


def test_the_docs_page_states_each_models_parameter_count():
    import re

    from experiments import addition as study

    page = (helpers.ROOT / "docs/addition.md").read_text()
    for model in study.MODELS:
        row = re.search(rf"^\| {re.escape(model)} \|.*\| ([\d,]+) \|$", page, re.MULTILINE)
        assert row, f"docs/addition.md has no row for {model}"
        count = build_model(study.model_config(model).model).count_params()
        assert int(row.group(1).replace(",", "")) == count, model


def test_the_budget_screen_trains_longer_on_validation(monkeypatch, tmp_path):
    from experiments import addition as study

    name, variants, record = study.SCREENS["budget"]
    configs = [study.model_config(m, **changes) for m, changes in variants]
    assert [(c.model.transformers, c.epochs) for c in configs] == [(1, 150), (1, 300), (2, 60)]
    calls = []
    monkeypatch.setattr(study, "run_screen", lambda *a, **k: calls.append((a, k)) or [])
    assert study.main(["--screen", "budget", "--runs-dir", str(tmp_path)]) == 0
    (_, out, _), kwargs = calls[0]
    assert out.name == record == "screen_addition_budget.json" and kwargs["study"] == "budget"


def test_the_width_screen_moves_parameters_at_a_matched_count(tmp_path):
    from experiments import addition as study

    _, variants, record = study.SCREENS["width"]
    assert record == "screen_addition_width.json"
    assert variants[0] == study.BUDGET_SCREEN[-1]  # the budget screen's run, read back
    full = build_model(study.model_config("2xST-FCN", screened=True).model).count_params()
    assert full == 410_423  # the model as it was
    for model, changes in variants:
        config = study.model_config(model, screened=True, **changes)
        assert (config.epochs, config.model.transformers) == (60, 2)
        assert abs(study._parameters(config) / full - 1) < 0.005, changes
    # Its winner (validation, results/screen_addition_width.json) is the table's 2xST-FCN.
    rows = json.loads((helpers.ROOT / "results" / record).read_text())["variants"]
    best = min(rows, key=lambda r: r["val_error_percent"])
    winner = study.model_config("2xST-FCN", screened=True,
                                **{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in best["changes"].items()})
    assert winner.model == study.model_config("2xST-FCN").model
    unit = study.screen_unit(*variants[2], tmp_path)
    assert unit.run_dir.name == ("2xst-fcn_epochs60_localization_units8-32-32"
                                 "_dense_units107")
    assert unit.config.model.localization_units == (8, 32, 32)


def test_the_settling_screen_repeats_two_width_variants_over_seeds(tmp_path):
    from experiments import addition as study

    _, variants, record = study.SCREENS["settling"]
    assert record == "screen_addition_settling.json"
    units = [study.screen_unit(m, c, tmp_path) for m, c in variants]
    a, e = study.WIDTH_SCREEN[0], study.WIDTH_SCREEN[-1]
    assert [(u.config.seed, u.config.model.dense_units) for u in units] == [
        (0, 56), (0, 193), (1, 56), (1, 193), (2, 56), (2, 193)]
    assert units[:2] == [study.screen_unit(*a, tmp_path), study.screen_unit(*e, tmp_path)]
    assert units[2].run_dir.name == "2xst-fcn_epochs60_seed1"  # seed 0's runs read back


def test_each_model_spends_its_budget_capped_at_300_epochs():
    from experiments import addition as study

    assert study.EPOCHS == {"FCN": 300, "CNN": 36, "ST-FCN": 300, "2xST-FCN": 300,
                            "2xST-CNN": 36}
    for model, epochs in study.EPOCHS.items():
        assert epochs * study.EPOCH_SECONDS[model] <= study.BUDGET_SECONDS
        assert study.model_config(model).epochs == epochs
