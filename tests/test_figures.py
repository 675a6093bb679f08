"""stn.viz.figures on small synthetic inputs: panels, titles, labels, no pyplot."""

import numpy as np
import pytest
from matplotlib.figure import Figure

import helpers
from stn.train import config as C
from stn.analysis import evaluation as E
from stn.analysis import pose as P
from stn.viz import figures as F
from stn.data import tiles
from stn.data import warps
from stn.model import build_model, find_transformer

CANVAS = helpers.CANVAS
RNG = np.random.default_rng(0)


def texts(fig: Figure) -> str:
    """Every piece of text in the figure (titles, labels, annotations), joined."""
    found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(t for t in found if t)


def images(n, size=CANVAS):
    return RNG.random((n, size, size, 1)).astype(np.float32)


def seed_warps(n):
    return helpers.seed_warps(n, seed=1)


def test_confusion_figure_labels_rows_true_and_shows_recall_and_accuracy():
    confusion = np.diag(np.full(10, 90))
    confusion[3, 3], confusion[3, 5] = 81, 9  # 9 of the 90 true 3s called 5: recall 90%
    fig = F.confusion_figure(confusion)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert "true" in ax.get_ylabel() and "predicted" in ax.get_xlabel()
    assert "accuracy 99.00%" in ax.get_title()  # 891 / 900
    written = texts(fig)
    assert "recall" in written and "90.0%" in written and "100.0%" in written
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts if t.get_text().isdigit()}
    assert cells[(3, 5)] == "9" and (5, 3) not in cells  # row 3 (true), column 5


def test_transformers_figure_has_a_row_per_transformer():
    n = 5
    outputs = {"ST-CNN Aff": images(n), "ST-CNN Proj": images(n), "ST-CNN TPS": images(n)}
    fig = F.transformers_figure(images(n), outputs, np.arange(n), "R")
    assert len(fig.axes) == 4 * n
    assert [fig.axes[r * n].get_ylabel() for r in range(4)] == ["input", *outputs]
    assert fig.axes[2].get_title() == "digit 2"


def test_stn_outputs_figure_has_three_labelled_rows():
    n = 4
    pose = {k: np.zeros(n) for k in ("rotation", "scale", "tx", "ty")}
    fig = F.stn_outputs_figure(images(n), images(n), images(n), np.arange(n),
                               predictions=np.array([0, 1, 2, 0]), raw_pose=pose,
                               residual_pose=pose)
    assert len(fig.axes) == 3 * n
    assert [fig.axes[i].get_title().split("\n")[0] for i in range(n)] == \
        [f"digit {i}" for i in range(n)]
    assert "✗" in fig.axes[3].get_title() and "✓" in fig.axes[0].get_title()
    row_names = [fig.axes[r * n].get_ylabel() for r in range(3)]
    assert "canonical" in row_names[0] and "warped" in row_names[1]
    assert "transformer" in row_names[2]


def test_first_of_each_class_is_deterministic():
    labels = np.array([3, 1, 3, 0, 1, 2, 0])
    np.testing.assert_array_equal(tiles.first_of_each_class(labels), [3, 1, 5, 0])
    np.testing.assert_array_equal(tiles.first_of_each_class(labels, per_class=2), [3, 6, 1, 4, 5, 0, 2])


@pytest.mark.parametrize("epochs", [0, 1, 5])
def test_history_figure_has_loss_and_accuracy_panels(epochs):
    history = [{"epoch": e + 1, "train_loss": 1 / (e + 1), "train_accuracy": 0.9,
                "val_loss": 1 / (e + 2), "val_accuracy": 0.95, "seconds": 1.0}
               for e in range(epochs)]
    fig = F.history_figure(history)
    loss, acc = fig.axes
    assert "Loss" in loss.get_title() and "Accuracy" in acc.get_title()
    assert loss.get_xlabel() == "epoch" and "accuracy" in acc.get_ylabel()
    assert len(loss.get_lines()) == 2
    if epochs:
        np.testing.assert_allclose(acc.get_lines()[1].get_ydata(), 95.0)  # in percent


def test_pose_figure_panels_and_contiguous_half_turn():
    sampling = seed_warps(300)
    half_turn = warps.compose({"rotation": 180.0, "shear": 0.0, "scale": 1.0, "tx": 0.0,
                               "ty": 0.0}, CANVAS)
    theta = warps.chain(warps.invert(sampling), np.repeat(half_turn, 300, axis=0))
    fig = F.pose_figure(P.pose_alignment(sampling, theta, CANVAS))
    titles = [ax.get_title().split(":")[0] for ax in fig.axes]
    assert titles == ["rotation", "scale", "shear", "tx", "ty", "digit centre, 2-D"]
    assert "ratio 0.000" in fig.axes[0].get_title()
    # Residual rotations of +-180 are drawn as one cloud, not two.
    residual = fig.axes[0].collections[0].get_offsets()[:, 1]
    assert np.ptp(residual) < 1e-6 and abs(residual[0]) == pytest.approx(180)


def test_pose_figure_reports_points_off_the_scale():
    sampling = seed_warps(300)
    theta = warps.invert(sampling)
    theta[:2] *= 40.0  # two wild zooms (< 1% of the points): drawn off the scale
    fig = F.pose_figure(P.pose_alignment(sampling, theta, CANVAS))
    assert "2 points off the scale" in fig.axes[1].get_title()  # scale


@pytest.mark.parametrize("preset, size", [("seed", 40), ("paper", 42), ("cnn", 40),
                                          ("st-fcn-tps", 28)])
def test_architecture_figure_lists_every_layer_and_the_total(preset, size):
    model = build_model(preset, input_size=size, dense_units=8)
    written = texts(F.architecture_figure(model))
    names = [layer.name for layer in model.layers]
    transformer = find_transformer(model)
    if transformer is not None:
        names += [layer.name for layer in transformer.localization.layers]
        size = {"affine": 6, "projective": 8, "tps": 32}[transformer.kind]
        assert f"theta [B, {size}] ({transformer.kind})" in written
    for name in names:
        assert f"{name}  (" in written, name
    assert f"{model.count_params():,} parameters" in written
    for layer in model.layers:
        assert f"{layer.count_params():,} params" in written


def test_augmentation_figure_grid():
    fig = F.augmentation_figure(images(2), protocol="seed")
    assert len(fig.axes) == 2 * 6  # original, 4 distortions alone, all combined


@pytest.mark.parametrize("protocol, kind", [("p", "projective"), ("e", "tps")])
def test_augmentation_figure_of_a_protocol_without_named_distortions(protocol, kind):
    fig = F.augmentation_figure(images(3, size=28), protocol=protocol)
    assert len(fig.axes) == 3 * 6  # original, then 5 random warps
    assert [fig.axes[c].get_title() for c in range(1, 6)] == \
        [f"random warp {c}" for c in range(1, 6)]
    written = texts(fig)
    assert f"'{protocol}'" in written and kind in written and "non-affine" in written
    assert sum(ax.get_xlabel().startswith("rot ") for ax in fig.axes) == 3 * 5
    with pytest.raises(ValueError, match="canvas is 28 px"):
        F.augmentation_figure(images(2), protocol=protocol)


def synthetic_evaluation(transformer: bool, n=40):
    split = helpers.synthetic_split(n, RNG)
    labels, sampling = split.labels, split.warps
    config = C.make_config("seed" if transformer else "cnn", model_overrides={"dense_units": 8},
                           recipe="cosine")
    predictions = (labels + 1) % 10
    extra = {}
    if transformer:
        theta = warps.invert(sampling).astype(np.float32)
        extra = {"theta": theta, "transformed": split.canonical_images(),
                 "pose": P.pose_alignment(sampling, theta, CANVAS)}
    return E.Evaluation("run", config, build_model(config.model), split,
                        np.zeros((n, 10), np.float32), predictions,
                        E.confusion_matrix(labels, predictions), [], **extra)


@pytest.mark.parametrize("transformer", [True, False])
def test_evaluation_figures_builds_each_figure(transformer):
    made = F.evaluation_figures(synthetic_evaluation(transformer))
    expected = {"confusion_matrix", "loss_history", "data_augmentation", "architecture"}
    if transformer:
        expected |= {"stn_outputs", "pose_alignment"}
    assert set(made) == expected
    for name, make in made.items():
        assert isinstance(make(), Figure), name
