"""``MaceTrainParser`` on retrieved folders of real mace_run_train runs (one fixture per exit code) and its readers.

Fixtures: ``fixtures/pyacemaker_mace_train/<case>/`` hold the files a job retrieves (flat): the metrics file
``mace_s<seed>_run-<seed>_train.txt`` and the stdout ``mace_s<seed>.out`` of mace_run_train (mace-torch 0.3.16,
tiny model, 12 Si structures, 3 epochs; ``failed_out_of_walltime``'s seed 1 was killed after its first epoch,
``failed_training_diverged`` has the losses of epochs 1-2 set to NaN, ``failed_metrics_missing`` is the stdout of a
crash). The model file of the finished seed is the committed ``models/tiny-si/mace_si_tiny_s0.model`` (not copied,
to keep the fixtures small).
"""

from __future__ import annotations

import pathlib

import pytest
from aiida import orm

from aiida_pyacemaker.data import LabelledStructuresData, MaceModelData
from aiida_pyacemaker.parsers.mace_train import read_error_table, read_metrics, summarise_metrics

ENTRY_POINT = "pyacemaker.mace.train"
TINY_MODEL = pathlib.Path(__file__).resolve().parents[2] / "models" / "tiny-si" / "mace_si_tiny_s0.model"


@pytest.fixture
def model_bytes() -> bytes:
    return TINY_MODEL.read_bytes()


@pytest.fixture
def generate_inputs(si_dft_set):
    """Inputs of the parsed job: seeds, parameters, a small training set."""

    def factory(seeds=(0,)):
        return {
            "seeds": orm.List(list(seeds)),
            "parameters": orm.Dict({"max_num_epochs": 3, "valid_fraction": 0.15}),
            "training_set": LabelledStructuresData.from_atoms(si_dft_set[:4]),
        }

    return factory


def test_default(generate_calc_job_node, run_parser, generate_inputs, model_bytes, data_regression):
    node = generate_calc_job_node(ENTRY_POINT, "default", generate_inputs(), files={"mace_s0.model": model_bytes})
    results, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    model = results["models"]["s0"]
    assert isinstance(model, MaceModelData)
    assert model.elements == ["Si"]
    assert model.r_max == 4.5
    metrics = results["metrics"].get_dict()
    assert metrics["s0"]["epochs"] == 3
    assert [point["epoch"] for point in metrics["s0"]["learning_curve"]] == [None, 0, 1, 2]
    data_regression.check({key: value for key, value in metrics["s0"].items() if key != "learning_curve"})


def test_failed_model_missing(generate_calc_job_node, run_parser, generate_inputs):
    node = generate_calc_job_node(ENTRY_POINT, "failed_model_missing", generate_inputs())
    results, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == node.process_class.exit_codes.ERROR_MODEL_MISSING.status
    assert "seed 0" in calcfunction.exit_message
    assert "models" not in results


def test_failed_metrics_missing(generate_calc_job_node, run_parser, generate_inputs):
    node = generate_calc_job_node(ENTRY_POINT, "failed_metrics_missing", generate_inputs())
    results, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == node.process_class.exit_codes.ERROR_METRICS_MISSING.status
    assert results == {}


def test_failed_training_diverged(generate_calc_job_node, run_parser, generate_inputs, model_bytes):
    # A model file may exist (mace writes the best checkpoint's model): a diverged training still fails.
    inputs = generate_inputs()
    node = generate_calc_job_node(ENTRY_POINT, "failed_training_diverged", inputs, files={"mace_s0.model": model_bytes})
    results, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == node.process_class.exit_codes.ERROR_TRAINING_DIVERGED.status
    assert results["metrics"]["s0"]["diverged"] is True
    assert "models" not in results


def test_failed_out_of_walltime(generate_calc_job_node, run_parser, generate_inputs, model_bytes):
    """The scheduler killed the job during seed 1: seed 0's model and both seeds' metrics are kept, exit 400."""
    node = generate_calc_job_node(
        ENTRY_POINT,
        "failed_out_of_walltime",
        generate_inputs(seeds=(0, 1)),
        exit_status=node_exit_status_out_of_walltime(),
        files={"mace_s0.model": model_bytes},
    )
    results, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == node.process_class.exit_codes.ERROR_OUT_OF_WALLTIME.status
    assert set(results["models"]) == {"s0"}
    metrics = results["metrics"].get_dict()
    assert metrics["s0"]["epochs"] == 3
    assert metrics["s1"]["epochs"] == 1
    assert "train_rmse_f_mev_per_a" not in metrics["s1"]  # killed before its error table


def test_out_of_walltime_after_divergence_is_diverged(generate_calc_job_node, run_parser, generate_inputs):
    """A diverged seed wins over the walltime: continuing from its checkpoint would diverge again."""
    node = generate_calc_job_node(
        ENTRY_POINT, "failed_training_diverged", generate_inputs(), exit_status=node_exit_status_out_of_walltime()
    )
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == node.process_class.exit_codes.ERROR_TRAINING_DIVERGED.status


def node_exit_status_out_of_walltime() -> int:
    """The status the engine sets from the scheduler's verdict before the parser runs (120)."""
    from aiida.engine import CalcJob

    return CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status


# --- the readers ---


def test_nan_loss_marks_training_as_diverged():
    lines = [
        '{"loss": 1.0, "mode": "opt", "epoch": 0}',
        '{"loss": NaN, "mode": "eval", "epoch": 0, "rmse_e_per_atom": NaN, "rmse_f": NaN}',
    ]
    summary = summarise_metrics(read_metrics(lines))
    assert summary["diverged"] is True
    assert summary["epochs"] == 1


def test_finite_training_metrics_are_converted_to_mev():
    lines = ['{"loss": 0.5, "mode": "eval", "epoch": 4, "rmse_e_per_atom": 0.002, "rmse_f": 0.05}']
    summary = summarise_metrics(read_metrics(lines))
    assert not summary["diverged"]
    assert summary["epochs"] == 5
    assert summary["valid_rmse_e_mev_per_atom"] == 2.0
    assert summary["valid_rmse_f_mev_per_a"] == 50.0


def test_the_evaluation_before_training_is_no_epoch():
    lines = ['{"loss": 0.5, "mode": "eval", "epoch": null, "rmse_e_per_atom": 0.002, "rmse_f": 0.05}']
    assert summarise_metrics(read_metrics(lines))["epochs"] == 0


def test_error_table_of_mace_run_train():
    stdout = "| train_Default |  11.0 |  126.6 | 6.37 |\n| valid_Default | 8.4 | 98.7 | 7.04 |\n"
    assert read_error_table(stdout) == {
        "train_rmse_e_mev_per_atom": 11.0,
        "train_rmse_f_mev_per_a": 126.6,
        "valid_rmse_e_mev_per_atom": 8.4,
        "valid_rmse_f_mev_per_a": 98.7,
    }
