"""``MaceParser`` on retrieved folders (``fixtures/pyacemaker_mace/<case>``), one per exit code; no program runs.

The ``ok`` folder is the retrieved folder of a real job (the tiny committee on two rattled Si2 cells, seeds 0 and 1
of ``generate_structure``); the failures are real outputs of the committee script (a broken model file, an unreadable
xyz, a Python without numpy, the job's Python killed with SIGKILL under the direct scheduler's job script) or, for
the walltime, the line Slurm writes.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm

from aiida_pyacemaker.calculations.mace import MaceCalculation
from aiida_pyacemaker.data import MaceResultsData
from aiida_pyacemaker.parsers.mace import killed_line

ENTRY_POINT = "pyacemaker.mace"
EXIT_CODES = MaceCalculation.exit_codes


@pytest.fixture
def mace_inputs(generate_structure, tiny_committee):
    """The inputs of the job whose retrieved folder is the ``ok`` fixture."""
    return {
        "models": tiny_committee,
        "structures": {"a": generate_structure("si2", seed=0), "b": generate_structure("si2", seed=1)},
    }


def test_ok(generate_calc_job_node, run_parser, mace_inputs, data_regression):
    node = generate_calc_job_node(ENTRY_POINT, "ok", inputs=mace_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    results = outputs["results"]
    assert isinstance(results, MaceResultsData)
    assert results.get_array("structure_uuids").tolist() == [
        mace_inputs["structures"]["a"].uuid,
        mace_inputs["structures"]["b"].uuid,
    ]
    record = results.for_structure(mace_inputs["structures"]["b"])
    assert record["key"] == "b" and record["forces"].shape == (2, 3) and record["forces_per_model"].shape == (3, 2, 3)
    assert np.isfinite(record["stress"]).all()
    data_regression.check(
        {
            "attributes": {
                key: results.base.attributes.get(key) for key in ("num_structures", "num_models", "status_counts")
            },
            "keys": results.get_array("keys").tolist(),
            "status": results.get_array("status").tolist(),
            "energy": np.round(results.get_array("energy"), 6).tolist(),
            "uncertainty": np.round(results.get_array("uncertainty"), 6).tolist(),
        }
    )


@pytest.mark.parametrize(
    ("fixture_name", "exit_code", "message"),
    [
        ("output_missing", EXIT_CODES.ERROR_OUTPUT_MISSING, "no results file"),
        ("output_corrupt", EXIT_CODES.ERROR_OUTPUT_CORRUPT, "unreadable or incomplete"),
        ("model_unreadable", EXIT_CODES.ERROR_MODEL_UNREADABLE, "model_m1.model: UnpicklingError"),
        ("input_unreadable", EXIT_CODES.ERROR_INPUT_UNREADABLE, "Frame has 1 atoms, expected 2"),
        ("out_of_memory", EXIT_CODES.ERROR_OUT_OF_MEMORY, "Killed"),
    ],
)
def test_failures(generate_calc_job_node, run_parser, mace_inputs, fixture_name, exit_code, message):
    node = generate_calc_job_node(ENTRY_POINT, fixture_name, inputs=mace_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == exit_code.status
    assert message in calcfunction.exit_message
    assert "results" not in outputs


@pytest.mark.parametrize(
    ("fixture_name", "scheduler_status", "exit_code"),
    [
        # the scheduler's verdict comes first: Slurm's time limit, even when the killed job left a `Killed` line
        ("out_of_walltime", 120, EXIT_CODES.ERROR_OUT_OF_WALLTIME),
        ("out_of_memory", 120, EXIT_CODES.ERROR_OUT_OF_WALLTIME),
        ("out_of_walltime", 110, EXIT_CODES.ERROR_OUT_OF_MEMORY),
        # the verdict wins even over a results file: the scheduler saw the job exceed its limits, the handler decides
        ("ok", 110, EXIT_CODES.ERROR_OUT_OF_MEMORY),
    ],
)
def test_scheduler_verdict_is_mapped_first(
    generate_calc_job_node, run_parser, mace_inputs, fixture_name, scheduler_status, exit_code
):
    node = generate_calc_job_node(ENTRY_POINT, fixture_name, inputs=mace_inputs, exit_status=scheduler_status)
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == exit_code.status


def test_walltime_folder_without_the_scheduler_verdict_is_output_missing(
    generate_calc_job_node, run_parser, mace_inputs
):
    """Without the scheduler's 120 the walltime folder is only a job that wrote nothing (no kill signature)."""
    node = generate_calc_job_node(ENTRY_POINT, "out_of_walltime", inputs=mace_inputs)
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == EXIT_CODES.ERROR_OUTPUT_MISSING.status


def test_results_rows_must_match_the_input_structures(generate_calc_job_node, run_parser, mace_inputs):
    inputs = {**mace_inputs, "structures": {**mace_inputs["structures"], "c": orm.StructureData(cell=np.eye(3))}}
    node = generate_calc_job_node(ENTRY_POINT, "ok", inputs=inputs)
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == EXIT_CODES.ERROR_OUTPUT_CORRUPT.status


def test_unknown_error_report_is_corrupt_output(generate_calc_job_node, run_parser, mace_inputs):
    files = {"error.json": '{"error": "something_new", "message": "?"}'}
    node = generate_calc_job_node(ENTRY_POINT, inputs=mace_inputs, files=files)
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == EXIT_CODES.ERROR_OUTPUT_CORRUPT.status


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("_aiidasubmit.sh: line 6: 17272 Killed                  'python' 'mace_committee.py'", "Killed"),
        ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=42.batch.", "oom-kill"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "CUDA out of memory"),
        ("    return torch.empty(size)\nMemoryError", "MemoryError"),
        ("ModuleNotFoundError: No module named 'numpy'", None),
        ("UserWarning: Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected", None),
    ],
)
def test_killed_line_recognises_memory_and_kill_signatures(stderr, expected):
    line = killed_line(stderr)
    assert (line is None) if expected is None else (expected in line)


def test_cuda_out_of_memory_without_results_is_out_of_memory(generate_calc_job_node, run_parser, mace_inputs):
    stderr = "Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n"
    node = generate_calc_job_node(ENTRY_POINT, inputs=mace_inputs, files={"_scheduler-stderr.txt": stderr})
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == EXIT_CODES.ERROR_OUT_OF_MEMORY.status
    assert "CUDA out of memory" in calcfunction.exit_message
