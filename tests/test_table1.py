"""experiments.table1 on a tiny grid (two cells, a few steps, real MNIST), and experiments.grid."""

import json
import subprocess
import sys

import numpy as np
import pytest

import helpers
from experiments import grid

pytestmark = pytest.mark.slow
TINY = ["--epochs", "1", "--max-train-examples", "200", "--max-steps-per-epoch", "2",
        "--max-eval-examples", "200",
        "--precision", "float32", "--no-seeds"]


@pytest.fixture(scope="module")
def table1():
    from experiments import table1

    return table1


def test_the_grid_is_the_papers():
    cells = grid.all_cells(seeds=False)
    assert len(cells) == 40 and len(set(cells)) == 40  # 8 models x R, RTS, P, E, TC
    assert grid.paper_error("FCN", "TC") == 13.2 and grid.paper_error("CNN", "TC") == 3.5
    assert grid.paper_error("ST-FCN Proj", "TC") == 2.0  # one number per family in the paper
    assert grid.paper_error("ST-CNN Aff", "TC") == 1.7
    assert grid.run_name("ST-CNN Aff", "TC", 1) == "st-cnn-affine_tc_seed1"
    assert grid.paper_error("ST-CNN TPS", "E") == 1.1
    assert grid.paper_error("FCN", "RTS") == 5.2
    assert grid.run_name("ST-CNN Proj", "P") == "st-cnn-projective_p-cal"
    assert grid.cell_config("ST-CNN Proj", "E").protocol == "e-cal"
    assert len(grid.all_cells()) == 40 + 2 * len(grid.SEED_CELLS)
    assert {("CNN", "TC"), ("ST-CNN Aff", "TC")} <= set(grid.SEED_CELLS)
    # The literal readings' cells: the P and E columns, seed 0, their old names.
    literal = grid.all_cells(reading="literal")
    assert len(literal) == 16 and {p for _, p, _ in literal} == {"P", "E"}
    assert grid.run_name("ST-CNN Proj", "P", reading="literal") == "st-cnn-projective_p"
    assert grid.cell_config("FCN", "E", reading="literal").protocol == "e"


def test_model_fields_of_a_cell_replace_the_presets():
    config = grid.cell_config("ST-CNN Aff", "R", classifier_dropout=0.3, epochs=15)
    assert (config.model.classifier_dropout, config.epochs) == (0.3, 15)
    assert grid.cell_config("ST-CNN Aff", "R").model.classifier_dropout == 0.0


def test_rts_transformers_sample_a_28px_digit_and_baselines_read_the_canvas():
    st = grid.cell_config("ST-CNN Aff", "RTS").model
    assert (st.input_size, st.transformer_output_size) == (42, 28)
    assert grid.cell_config("CNN", "RTS").model.transformer_output_size is None
    assert grid.cell_config("ST-FCN TPS", "R").model.transformer_output_size is None


def test_tc_cells_read_60px_and_their_transformers_crop_to_the_chosen_side():
    for model in grid.MODELS:
        config = grid.cell_config(model, "TC")
        assert (config.protocol, config.model.input_size) == ("tc", 60)
        expected = grid.TC_TRANSFORMER_OUTPUT if config.model.transformer else None
        assert config.model.transformer_output_size == expected
        for key, value in grid.TC_FIELDS.items():
            assert getattr(config, key) == value
    assert grid.cell_config("CNN", "TC", epochs=3).epochs == 3  # a cell's own field wins


def test_tiny_grid_runs_resumes_and_writes_the_table(tmp_path, table1, capsys):
    # What is under test (each cell trained, evaluated, kept, tabled, and
    # skipped once done) is the same for every cell: a baseline on E and a
    # TPS transformer on R, both fully connected (the smallest models). On R
    # the pose fit is fast; on E's TPS warps it took 10 s of the test's 30
    # (10,000 digits), so the pose of TPS warps is test_evaluation.py's, on 300.
    args = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--cells", "FCN/E", "ST-FCN TPS/R", *TINY]
    assert table1.main(args) == 0
    record = json.loads((tmp_path / "results" / "table1.json").read_text())
    cells = {(c["model"], c["protocol"]): c for c in record["cells"]}
    assert set(cells) == {("FCN", "E"), ("ST-FCN TPS", "R")}
    for cell in cells.values():
        assert set(cell) == {"model", "protocol", "error_percent", "paper_error_percent",
                             "run", "epochs", "train_seconds"}
        assert 0.0 <= cell["error_percent"] <= 100.0 and cell["epochs"] == 1
        kept = tmp_path / "results" / "table1" / cell["run"].split("/")[-1]
        for name in ("config.json", "history.csv", "metrics.json", "results.json"):
            assert (kept / name).exists(), name
    assert cells[("ST-FCN TPS", "R")]["paper_error_percent"] == 1.1
    table = (tmp_path / "results" / "table1.md").read_text()
    assert "| ST-FCN TPS |" in table and "2 of 40 cells" in table
    assert "-: not run yet" in table
    # A second call trains nothing: both cells are done.
    capsys.readouterr()
    assert table1.main(args) == 0
    out = capsys.readouterr().out
    assert out.count(": done, in ") == 2 and "===" not in out


def test_tiny_tc_cell_runs_and_is_tabled_in_the_tc_column(tmp_path, table1):
    args = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--cells", "ST-FCN Aff/TC", *TINY]
    assert table1.main(args) == 0
    record = json.loads((tmp_path / "results" / "table1.json").read_text())["cells"]
    assert [(c["model"], c["protocol"], c["paper_error_percent"]) for c in record] == [
        ("ST-FCN Aff", "TC", 2.0)]
    from stn.train import runs

    config = runs.read_config(tmp_path / "results" / "table1" / "st-fcn-affine_tc")
    assert (config.protocol, config.model.input_size) == ("tc", 60)
    assert "| model | R | RTS | P | E | TC |" in (tmp_path / "results" / "table1.md").read_text()


def test_learning_rate_flag_rebuilds_cells_at_another_rate(tmp_path, table1):
    args = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--cells", "FCN/E", "--learning-rate", "0.001", *TINY]
    assert table1.main(args) == 0
    from stn.train import runs

    config = runs.read_config(tmp_path / "results" / "table1" / "paper-fcn_e-cal")
    assert (config.learning_rate, config.recipe) == (0.001, "table1")
    assert json.loads((tmp_path / "results" / "table1.json").read_text())["cells"][0][
        "protocol"] == "E"


def test_unknown_cell_is_an_error(table1):
    with pytest.raises(SystemExit, match="unknown cell"):
        table1.main(["--cells", "ResNet/R", "--table-only"])


def _first_table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("results_dir, fields", [
    ("results", {}),
    ("results/table1_ep30", {"epochs": 30}),  # the grid before the recipe's 45 epochs
    ("results/table1_lr1e-3", {"learning_rate": 1e-3, "epochs": 30}),  # and before its 3e-3
])
def test_committed_table_is_the_runners_output_of_the_committed_cells(table1, results_dir,
                                                                      fields):
    # results/table1.{md,json} and the README's table are what the runner
    # writes from the committed cell records: no cell edited by hand.
    results = helpers.ROOT / results_dir

    def records_of(reading):
        def config_of(model, protocol, seed):  # the committed cells ran in mixed bfloat16
            return grid.cell_config(model, protocol, seed, "table1", "mixed_bfloat16",
                                    reading, **fields)

        return table1.collect(results / "table1", grid.all_cells(reading=reading), config_of,
                              reading=reading)

    def main_cells(records):
        return [{k: r[k] for k in table1.CELL_KEYS} for r in records if r["seed"] == 0]

    records, literal = records_of("calibrated"), records_of("literal")
    assert len(main_cells(literal)) == 16
    columns = tuple(grid.PROTOCOLS)
    if results_dir != "results":  # older grids: all four columns at the literal readings
        records += literal
        columns = ("R", "RTS", "P", "E")  # before TC
    else:  # the literal readings' table beside the calibrated one
        assert (results / "table1_literal.md").read_text() == table1.markdown(literal, ("P", "E"))
        assert json.loads((results / "table1_literal.json").read_text()) == {
            "cells": main_cells(literal)}
    markdown = table1.markdown(records, columns)
    assert (results / "table1.md").read_text() == markdown
    assert json.loads((results / "table1.json").read_text()) == {"cells": main_cells(records)}
    # Every cell of R to E; the TC column fills in cell by cell.
    assert len([c for c in main_cells(records) if c["protocol"] != "TC"]) == 32
    if results_dir == "results":  # the README's headline table and docs/table1.md's
        readme = (helpers.ROOT / "README.md").read_text().split("## Results", 1)[1]
        assert _first_table(readme) == _first_table(markdown)
        page = (helpers.ROOT / "docs" / "table1.md").read_text()
        assert _first_table(page.split("## All 32 cells", 1)[1]) == _first_table(markdown)
        assert (_first_table(page.split("## The literal readings of P and E", 1)[1])
                == _first_table(table1.markdown(literal, ("P", "E"))))


def test_rotation_diagnosis_tells_a_partial_turn_from_class_poses():
    from experiments import rotation
    rng = np.random.default_rng(0)
    raw = rng.uniform(-90, 90, 4000)
    # A partial turn: 60% of every rotation left, around a common pose of 170 deg
    # (residuals that cross +-180, so the statistics must be circular).
    partial = rotation.rotation_stats(raw, (170 + 0.6 * raw + 180) % 360 - 180)
    assert partial["slope"] == pytest.approx(0.6, abs=1e-9)
    assert partial["std"] == pytest.approx(0.6 * np.std(raw), rel=1e-6)
    assert abs(partial["mean"] - 170) < 1.0  # the sample's circular mean
    # A pose of its own (here +30 deg) reached whatever the turn: slope 0, std 0.
    own = rotation.rotation_stats(raw, np.full_like(raw, 30.0))
    assert own["slope"] == pytest.approx(0.0, abs=1e-9) and own["std"] < 1e-9
    assert own["mean"] == pytest.approx(30.0)


def test_principal_tilt_reads_a_bar_and_its_sign_is_the_pose_metrics():
    import tensorflow as tf

    from experiments import rotation
    from stn.train import alignment
    from stn.layer import kinds
    from stn.analysis import pose as stn_pose

    bar = np.zeros((1, 28, 28), np.float32)  # its top leaning left: x grows with the row
    for t in np.linspace(-9, 9, 400):
        bar[0, int(round(14 + t)), int(round(14 + 0.3 * t))] = 1.0
    tilt, eccentricity = rotation.principal_tilt(bar)
    assert tilt[0] == pytest.approx(np.degrees(np.arctan(0.3)), abs=1.0)
    assert eccentricity[0] > 0.95
    assert rotation.principal_tilt(np.ones((1, 28, 28)))[1][0] == pytest.approx(0.0, abs=1e-12)
    # The map that stands the bar up has a residual rotation of +tilt in stn.analysis.pose.
    theta = alignment.rotation_params(tf.constant([-np.radians(tilt[0])], tf.float32))
    upright = kinds.warp(tf.constant(bar[..., None]), theta).numpy()[..., 0]
    assert abs(rotation.principal_tilt(upright)[0][0]) < 1.0
    pose = stn_pose.pose_alignment(kinds.identity("affine", 1), theta.numpy(), 28)
    assert pose.residual["rotation"][0] == pytest.approx(tilt[0], abs=1e-3)
    # A residual that follows the tilt by a known share, whatever the raw turn.
    rng = np.random.default_rng(1)
    raw, own = rng.uniform(-90, 90, 3000), rng.normal(0, 20, 3000)
    stats = rotation.tilt_stats(raw, 0.1 * raw + 0.4 * own, own)
    # (the sample's tilt is not quite uncorrelated with its raw turns)
    assert stats["coefficient"] == pytest.approx(0.4, abs=0.005)
    assert stats["left_std_after"] < 0.5 < 7.0 < stats["left_std"]
    assert stats["correlation"] > 0.999


def test_errors_by_turn_groups_by_the_turns_size():
    from experiments import rotation

    raw = np.array([-80.0, 5.0, -10.0, 40.0, 60.0, -2.0])
    wrong = np.array([True, False, False, False, True, True])
    got = rotation.errors_by_turn(raw, wrong)  # |raw|: 2, 5 | 10, 40 | 60, 80
    assert got["edges"][0] == 2.0 and got["edges"][-1] == 80.0
    assert got["error_percent"] == [50.0, 0.0, 100.0]


def test_perfect_params_read_a_warped_digit_back_onto_its_own_canvas():
    import tensorflow as tf

    from experiments import perfect_transformer as perfect
    from stn.data import pipeline as stn_data
    from stn.layer import kinds

    y, x = np.mgrid[:28, :28]
    blob = np.exp(-((x - 13.5) ** 2 + (y - 12.0) ** 2) / 20.0).astype(np.float32)  # a smooth digit
    for canvas in (28, 42):
        c, s = np.cos(0.5), np.sin(0.5)  # a turn, a zoom and a shift, as R and RTS draw
        warp = np.array([[0.9 * c, -0.9 * s, 0.1, 0.9 * s, 0.9 * c, -0.05]], np.float32)
        warped = kinds.warp(stn_data.pad(255.0 * blob[None], canvas), warp)  # as the splits are
        back = kinds.warp(warped, perfect.perfect_params(warp, canvas), out_size=(28, 28))
        np.testing.assert_allclose(back.numpy()[0, :, :, 0], blob, atol=0.05)  # resampled twice
        forward_only = kinds.warp(warped, warp, out_size=(28, 28)).numpy()[0, :, :, 0]
        assert np.abs(forward_only - blob).max() > 0.3  # the check is not blind


def test_protocol_severity_reached_pixels_of_known_warps():
    from experiments import protocol_severity as severity
    from stn.layer import kinds

    identity = kinds.identity("affine", 1)
    # Output x reads input x + 1 (half the canvas to the right): the left half is never read.
    shifted = np.array([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
    # Output reads the centre, zoomed in 2x: only the central 14 x 14 pixels are read.
    zoomed = np.array([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])
    hit = severity.reached(np.concatenate([identity, shifted, zoomed]), "affine", 28)
    assert hit[0].all()
    assert hit[1][:, 14:].all() and not hit[1][:, :14].any()
    assert hit[2][7:21, 7:21].all() and hit[2].sum() == 14 * 14
    tps = severity.reached(kinds.identity("tps", 1), "tps", 28)
    assert tps.all()


def test_protocol_severity_splits_errors_by_ink_lost():
    from experiments import protocol_severity as severity
    lost = np.array([0.0, 0.01, 0.05, 0.06, 0.20, 0.5, 0.9, 1.0])
    wrong = np.array([False, True, False, False, True, True, True, False])
    rows = severity.errors_by_loss(wrong, lost)
    assert [r["ink_lost"] for r in rows] == [[0.0, 0.05], [0.05, 0.2], [0.2, 1.0]]
    assert [r["digits"] for r in rows] == [3, 2, 3]  # 0.05 and 0.20 close their bins
    assert [r["errors"] for r in rows] == [1, 1, 2]
    assert [r["error_percent"] for r in rows] == [33.33, 50.0, 66.67]
    assert [r["share_of_errors"] for r in rows] == [0.25, 0.25, 0.5]
    none = severity.errors_by_loss(np.zeros(8, bool), lost)
    assert [r["share_of_errors"] for r in none] == [None, None, None]


def test_protocol_severity_refuses_a_run_of_another_protocol(tmp_path):
    import types

    from stn.train import config as C
    from stn.train import runs

    from experiments import protocol_severity as severity
    runs.init_run_dir(tmp_path / "run", C.make_config("paper-cnn", "p",
                                                      recipe="cosine"), command=None)
    split = types.SimpleNamespace(protocol="e")
    with pytest.raises(runs.RunError, match="protocol 'p' seed 0, not 'e' seed 0"):
        severity.run_errors(tmp_path / "run", np.zeros(1), split, seed=0)
    with pytest.raises(runs.RunError, match="seed 0, not 'p' seed 1"):
        severity.run_errors(tmp_path / "run", np.zeros(1), types.SimpleNamespace(protocol="p"),
                            seed=1)


def test_studies_run_as_modules_of_the_experiments_package():
    # The documented way: python -m experiments.<study>, from the repository.
    proc = subprocess.run([sys.executable, "-m", "experiments.table1", "--help"],
                          cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "python -m experiments.table1 --list" in proc.stdout
