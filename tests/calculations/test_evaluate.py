"""``EvaluateCalculation``: the job's files for an ACE potential and a MACE model, and refused inputs."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk
from ase.io import read

from aiida_pyacemaker.calculations.evaluate import SCRIPT
from aiida_pyacemaker.data import StructureSetData

ENTRY_POINT = "pyacemaker.evaluate"


@pytest.fixture
def structure_set():
    node = StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43), bulk("Si", "diamond", a=5.5, cubic=True)])
    node.set_array("relax", np.array([False, True]))
    return node


def test_prepare_for_submission_ace(fixture_sandbox, fixture_code, generate_calc_job, si_ace_potential, structure_set):
    inputs = {"code": fixture_code(ENTRY_POINT), "potential": si_ace_potential, "structure_set": structure_set}
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    params = calcinfo.codes_info[0].cmdline_params
    assert params[:5] == [SCRIPT, "--engine", "ace", "--potential", "potential.yaml"]
    assert "--fmax=0.005" in params
    assert [target for _, _, target in calcinfo.local_copy_list] == ["potential.yaml"]
    with fixture_sandbox.open("structures.xyz") as handle:
        written = read(handle, index=":", format="extxyz")
    assert [bool(atoms.info["relax"]) for atoms in written] == [False, True]
    assert [len(atoms) for atoms in written] == [2, 8]


def test_prepare_for_submission_mace(fixture_sandbox, fixture_code, generate_calc_job, foundation_model, structure_set):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "potential": foundation_model,
        "structure_set": structure_set,
        "parameters": orm.Dict({"dtype": "float32"}),
    }
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    params = calcinfo.codes_info[0].cmdline_params
    assert params[1:5] == ["--engine", "mace", "--potential", "model.model"]
    assert "--dtype=float32" in params
    assert calcinfo.local_copy_list == [(foundation_model.uuid, foundation_model.filename, "model.model")]


def test_unknown_element_is_refused(fixture_code, generate_calc_job, si_ace_potential):
    copper = StructureSetData.from_atoms([bulk("Cu", "fcc", a=3.6)])
    inputs = {"code": fixture_code(ENTRY_POINT), "potential": si_ace_potential, "structure_set": copper}
    with pytest.raises(ValueError, match=r"\['Cu'\], which potential"):
        generate_calc_job(None, ENTRY_POINT, inputs)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"fmax": 0.0}, "parameters.fmax"), ({"steps": 3}, "unknown key `steps`"), ({"device": "tpu"}, "cpu, cuda")],
)
def test_bad_parameters_are_refused(
    fixture_code, generate_calc_job, si_ace_potential, structure_set, parameters, message
):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "potential": si_ace_potential,
        "structure_set": structure_set,
        "parameters": orm.Dict(parameters),
    }
    with pytest.raises(ValueError, match=message):
        generate_calc_job(None, ENTRY_POINT, inputs)
