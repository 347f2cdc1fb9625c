"""``AceMdCalculation``: what the job writes and runs, and the inputs refused at submission (no program runs)."""

from __future__ import annotations

import json
import pathlib

import pytest
from aiida import orm
from ase.build import bulk

from aiida_pyacemaker.calculations.ace_md import DEFAULT_PARAMETERS, SCRIPT
from aiida_pyacemaker.data import AcePotentialData, StructureSetData

ENTRY_POINT = "pyacemaker.ace.md"
SI_ACE_MD = pathlib.Path(__file__).resolve().parents[1] / "data" / "si_ace_md"


@pytest.fixture
def start():
    return StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43, cubic=True)])


def test_prepare_for_submission(fixture_sandbox, fixture_code, generate_calc_job, si_ace_potential, start):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "potential": si_ace_potential,
        "structure_set": start,
        "parameters": orm.Dict({"temperatures": [900.0], "steps": 50}),
    }
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    (codeinfo,) = calcinfo.codes_info
    assert codeinfo.cmdline_params[0] == SCRIPT
    assert "--active-set" in codeinfo.cmdline_params
    assert sorted(target for _, _, target in calcinfo.local_copy_list) == ["potential.asi", "potential.yaml"]
    assert set(fixture_sandbox.get_content_list()) == {SCRIPT, "start.xyz", "parameters.json"}
    with fixture_sandbox.open("parameters.json") as handle:
        written = json.load(handle)
    assert written == {**DEFAULT_PARAMETERS, "temperatures": [900.0], "steps": 50}
    assert {"summary.json", "selected.xyz", "trajectory.npz", "error.json"} <= set(calcinfo.retrieve_list)


def test_stability_runs_without_an_active_set(fixture_sandbox, fixture_code, generate_calc_job, start):
    """gamma needs the .asi; a stability run of a potential without one still runs (no gamma reported)."""
    potential = AcePotentialData.from_files(SI_ACE_MD / "potential.yaml", SI_ACE_MD / "potential.yace")
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "potential": potential,
        "structure_set": start,
        "parameters": orm.Dict({"mode": "stability"}),
    }
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    assert "--active-set" not in calcinfo.codes_info[0].cmdline_params
    assert [target for _, _, target in calcinfo.local_copy_list] == ["potential.yaml"]


def test_exploring_without_an_active_set_is_refused(fixture_code, generate_calc_job, start):
    potential = AcePotentialData.from_files(SI_ACE_MD / "potential.yaml", SI_ACE_MD / "potential.yace")
    inputs = {"code": fixture_code(ENTRY_POINT), "potential": potential, "structure_set": start}
    with pytest.raises(ValueError, match="has no active set"):
        generate_calc_job(None, ENTRY_POINT, inputs)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"temperature": 300.0}, "unknown key `temperature`"),
        ({"temperatures": []}, "parameters.temperatures"),
        ({"temperatures": [300.0, -5.0]}, "parameters.temperatures"),
        ({"mode": "npt"}, "explore or stability"),
        ({"timestep_fs": 10.0}, "time step"),
        ({"gamma_select": 5.0, "gamma_stop": 4.0}, "gamma_select (5.0) must be below gamma_stop (4.0)"),
        ({"steps": True}, "parameters.steps"),
    ],
)
def test_bad_parameters_are_refused(fixture_code, generate_calc_job, si_ace_potential, start, parameters, message):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "potential": si_ace_potential,
        "structure_set": start,
        "parameters": orm.Dict(parameters),
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate_calc_job(None, ENTRY_POINT, inputs)
