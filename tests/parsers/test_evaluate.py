"""``EvaluateParser`` on retrieved folders (``fixtures/pyacemaker_evaluate/<case>``); no program runs.

``ok`` is a real run of ``evaluate_structures.py`` with the shipped Si ACE potential: a primitive cell as it is and
a rattled 16-atom cell relaxed at fixed cell (19 BFGS steps to 0.01 eV/A).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from aiida_pyacemaker.calculations.evaluate import EvaluateCalculation
from aiida_pyacemaker.data import LabelledStructuresData, StructureSetData

ENTRY_POINT = "pyacemaker.evaluate"
EXIT_CODES = EvaluateCalculation.exit_codes


@pytest.fixture
def evaluate_inputs(si_ace_potential):
    rattled = bulk("Si", "diamond", a=5.43).repeat(2)
    rattled.rattle(0.05, seed=1)
    structures = StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43), rattled])
    structures.set_array("relax", np.array([False, True]))
    return {"potential": si_ace_potential, "structure_set": structures}


def test_ok(generate_calc_job_node, run_parser, evaluate_inputs):
    node = generate_calc_job_node(ENTRY_POINT, "ok", inputs=evaluate_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    labelled = outputs["labelled"]
    assert isinstance(labelled, LabelledStructuresData) and len(labelled) == 2
    assert labelled.get_array("source").tolist() == ["other", "other"]
    assert labelled.get_array("relax_steps").tolist() == [0, 19]
    assert labelled.get_array("relax_converged").all()
    relaxed = labelled.to_atoms()[1]
    assert np.abs(relaxed.get_forces()).max() < 0.01, "the relaxed row carries its relaxed geometry and forces"
    assert np.isfinite(labelled.get_array("stress")).all()


@pytest.mark.parametrize(
    ("fixture_name", "exit_code", "message"),
    [
        ("output_missing", EXIT_CODES.ERROR_OUTPUT_MISSING, "no results file"),
        ("output_corrupt", EXIT_CODES.ERROR_OUTPUT_CORRUPT, "unreadable or incomplete"),
        ("potential_unreadable", EXIT_CODES.ERROR_POTENTIAL_UNREADABLE, "model.model"),
        ("input_unreadable", EXIT_CODES.ERROR_INPUT_UNREADABLE, "Frame has 1 atoms, expected 2"),
        ("out_of_memory", EXIT_CODES.ERROR_OUT_OF_MEMORY, "Killed"),
    ],
)
def test_failures(generate_calc_job_node, run_parser, evaluate_inputs, fixture_name, exit_code, message):
    node = generate_calc_job_node(ENTRY_POINT, fixture_name, inputs=evaluate_inputs)
    outputs, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == exit_code.status
    assert message in calcfunction.exit_message
    assert "labelled" not in outputs


def test_scheduler_walltime_is_mapped_first(generate_calc_job_node, run_parser, evaluate_inputs):
    node = generate_calc_job_node(ENTRY_POINT, "ok", inputs=evaluate_inputs, exit_status=120)
    _, calcfunction = run_parser(node, ENTRY_POINT)
    assert calcfunction.exit_status == EXIT_CODES.ERROR_OUT_OF_WALLTIME.status
