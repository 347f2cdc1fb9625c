"""``AceMdParser`` on retrieved folders (``fixtures/pyacemaker_ace_md/<case>``), one per exit code; no program runs.

``ok`` (exploration) and ``stability`` are the outputs of real runs of ``ace_md.py`` with the shipped Si potential
(``tests/data/si_ace_md``); the failures are real outputs of the script (a broken potential file, an unreadable
xyz, the script killed with SIGKILL under bash) or a truncated copy of ``ok``.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from aiida_pyacemaker.calculations.ace_md import AceMdCalculation
from aiida_pyacemaker.data import StructureSetData

ENTRY_POINT = "pyacemaker.ace.md"
EXIT_CODES = AceMdCalculation.exit_codes


@pytest.fixture
def md_inputs(si_ace_potential):
    return {
        "potential": si_ace_potential,
        "structure_set": StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43, cubic=True)]),
    }


def test_ok_exploration(generate_calc_job_node, run_parser, md_inputs):
    node = generate_calc_job_node(ENTRY_POINT, "ok", inputs=md_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    summary = outputs["summary"].get_dict()
    assert [record["temperature"] for record in summary["trajectories"]] == [900.0, 1800.0]
    assert all(record["atoms"] == 64 for record in summary["trajectories"])
    selected = outputs["selected"]
    assert len(selected) == summary["frames_selected"] == 2
    assert summary["frames_collected"] >= len(selected)
    gamma = selected.get_array("gamma")
    assert (gamma >= 1.1).all() and (gamma < 5.0).all(), "selected frames lie between gamma_select and gamma_stop"
    assert set(selected.get_array("temperature")) <= {900.0, 1800.0}
    series = outputs["trajectory"]
    assert {"t000_gamma", "t001_temperature", "t001_epot"} <= set(series.get_arraynames())
    assert np.isfinite(series.get_array("t001_epot")).all()


def test_ok_stability_has_no_selected_frames(generate_calc_job_node, run_parser, md_inputs):
    node = generate_calc_job_node(ENTRY_POINT, "stability", inputs=md_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    assert "selected" not in outputs
    (record,) = outputs["summary"]["trajectories"]
    assert record["stop_reason"] == "completed" and record["steps"] == 500
    assert abs(record["nve_drift_mev_per_atom_per_ps"]) < 5.0


@pytest.mark.parametrize(
    ("fixture_name", "exit_code", "message"),
    [
        ("output_missing", EXIT_CODES.ERROR_OUTPUT_MISSING, "no summary"),
        ("output_corrupt", EXIT_CODES.ERROR_OUTPUT_CORRUPT, "unreadable or incomplete"),
        ("potential_unreadable", EXIT_CODES.ERROR_POTENTIAL_UNREADABLE, "end of sequence flow not found"),
        ("input_unreadable", EXIT_CODES.ERROR_INPUT_UNREADABLE, "Frame has 1 atoms, expected 2"),
        ("out_of_memory", EXIT_CODES.ERROR_OUT_OF_MEMORY, "Killed"),
    ],
)
def test_failures(generate_calc_job_node, run_parser, md_inputs, fixture_name, exit_code, message):
    node = generate_calc_job_node(ENTRY_POINT, fixture_name, inputs=md_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == exit_code.status
    assert message in calcfunction.exit_message
    assert "summary" not in outputs


@pytest.mark.parametrize(
    ("scheduler_status", "exit_code"),
    [(120, EXIT_CODES.ERROR_OUT_OF_WALLTIME), (110, EXIT_CODES.ERROR_OUT_OF_MEMORY)],
)
def test_scheduler_verdict_is_mapped_first(generate_calc_job_node, run_parser, md_inputs, scheduler_status, exit_code):
    node = generate_calc_job_node(ENTRY_POINT, "ok", inputs=md_inputs, exit_status=scheduler_status)
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == exit_code.status
