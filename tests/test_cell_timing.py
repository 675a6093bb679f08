"""experiments.cell_timing: a real (tiny) timing of one cell's model."""

import pytest

pytestmark = pytest.mark.slow


def test_time_cell_times_the_cells_model_and_scales_to_its_recipe():
    from experiments import cell_timing, grid

    row = cell_timing.time_cell("FCN", "R", steps=2, precision="float32")
    config = grid.cell_config("FCN", "R", 0, "table1", "float32")
    assert (row["model"], row["column"], row["batch"], row["epochs"]) == (
        "FCN", "R", config.batch_size, config.epochs)
    assert row["train_step_ms"] > 0 and row["eval_step_ms"] > 0
    # 215 training steps and 20 validation batches an epoch, at 256 a batch.
    epoch = 215 * row["train_step_ms"] / 1e3 + 20 * row["eval_step_ms"] / 1e3
    assert row["epoch_s"] == pytest.approx(epoch, abs=0.2)
    assert row["cell_min"] == pytest.approx(
        (config.epochs * epoch + 40 * row["eval_step_ms"] / 1e3) / 60, abs=0.2)
    assert row["cores"] >= 1 and row["cpu"]
