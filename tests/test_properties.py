"""``aiida_pyacemaker.properties``: the validation structures and the physics computed from their labels.

Labels come from a real potential (the shipped small Si ACE, through python-ace), computed in-process as the
``EvaluateCalculation`` script does; no AiiDA process runs.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS

from aiida_pyacemaker import properties
from aiida_pyacemaker.calculations.functions.validation import md_stability

PROTOTYPE = bulk("Si", "diamond", a=5.43, cubic=True)
SI_ACE_MD = pathlib.Path(__file__).resolve().parent / "data" / "si_ace_md"


@pytest.fixture(scope="module")
def calculator():
    from pyace import PyACECalculator

    return PyACECalculator(str(SI_ACE_MD / "potential.yaml"))


def label(structures: list, calculator) -> list:
    labelled = []
    for atoms in structures:
        atoms.calc = calculator
        if atoms.info["relax"]:
            BFGS(atoms, logfile=None).run(fmax=0.002, steps=300)
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(
            copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress()
        )
        labelled.append(copy)
    return labelled


@pytest.fixture(scope="module")
def result(calculator):
    eos = label(properties.eos_structures(PROTOTYPE), calculator)
    fit = properties.fit_eos([a.get_volume() for a in eos], [a.get_potential_energy() for a in eos], len(eos[0]))
    rows = label(properties.property_structures(PROTOTYPE, fit["volume_per_atom"]), calculator)
    return properties.compute_properties(PROTOTYPE, eos, rows), fit, rows


def test_structures_of_both_stages():
    eos = properties.eos_structures(PROTOTYPE)
    volumes = np.array([atoms.get_volume() / len(atoms) for atoms in eos])
    assert len(eos) == 7 and all(len(atoms) == 2 for atoms in eos), "the primitive cell at 7 volumes"
    assert volumes.max() / volumes.min() == pytest.approx(1.06 / 0.94)
    rows = properties.property_structures(PROTOTYPE, 20.0)
    tasks = [atoms.info["task"] for atoms in rows]
    assert tasks.count("phonon") == 1, "diamond Si needs one displacement (phonopy, by symmetry)"
    assert {task for task in tasks if task.startswith("strain_")} == {
        "strain_xx_plus",
        "strain_xx_minus",
        "strain_yz_plus",
        "strain_yz_minus",
    }
    relaxed = {atoms.info["task"] for atoms in rows if atoms.info["relax"]}
    assert relaxed == {"strain_xx_plus", "strain_xx_minus", "strain_yz_plus", "strain_yz_minus", "vacancy"}
    by_task = {atoms.info["task"]: atoms for atoms in rows}
    assert len(by_task["vacancy"]) == len(by_task["vacancy_bulk"]) - 1 == 15
    assert by_task["vacancy_bulk"].get_volume() / 16 == pytest.approx(20.0)


def test_properties_are_consistent_with_each_other(result):
    values, fit, _ = result
    # the lattice constant of the cubic cell from the fitted volume: a0^3 = 8 V0
    assert values["lattice_constant"] ** 3 == pytest.approx(8 * fit["volume_per_atom"])
    # cubic: B = (C11 + 2 C12) / 3, from stresses under strain, must agree with the EOS fit from energies
    bulk_from_elastic = (values["c11_gpa"] + 2 * values["c12_gpa"]) / 3
    assert bulk_from_elastic == pytest.approx(values["bulk_modulus_gpa"], rel=0.05)
    assert values["born_stable"] and values["c44_gpa"] > 0
    assert not values["imaginary_modes"]
    bands = values["band_frequencies_thz"]
    gamma_point = int(np.argmin(np.abs(values["band_x"] - 0.0)))
    assert np.abs(bands[gamma_point, :3]).max() < 0.05, "acoustic modes vanish at Gamma"
    assert values["max_frequency_thz"] == pytest.approx(bands.max())
    assert 0 < values["vacancy_formation_energy"] < 10


def test_relaxed_ions_lower_c44(result, calculator):
    """C44 with relaxed ions is below the clamped-ion value (internal strain of diamond relaxes the shear)."""
    values, fit, _ = result
    primitive, _ = properties.scaled_to_volume(PROTOTYPE, fit["volume_per_atom"])
    clamped = {}
    for name, strain in properties.elastic_strains(0.01).items():
        atoms = properties.strained(primitive, strain)
        atoms.calc = calculator
        clamped[name] = atoms.get_stress(voigt=False)
    assert properties.elastic_constants(clamped, 0.01)["c44_gpa"] > values["c44_gpa"]


def test_comparison_table_and_text():
    engines = {
        "ace": {"lattice_constant": 5.46, "c44_gpa": 60.0},
        "teacher": {"lattice_constant": 5.45, "c44_gpa": 66.0},
        "dft": {"lattice_constant": 5.47, "c44_gpa": 0.0},
    }
    rows = {row["property"]: row for row in properties.comparison_table(engines)}
    assert rows["lattice_constant"]["ace_error_pct"] == pytest.approx(100 * (5.46 - 5.47) / 5.47)
    assert rows["lattice_constant"]["teacher_error_pct"] == pytest.approx(100 * (5.45 - 5.47) / 5.47)
    assert rows["c44_gpa"]["ace_error_pct"] is None, "no relative error against a zero reference"
    assert rows["bulk_modulus_gpa"]["ace"] is None
    text = properties.format_table(list(rows.values()), ["ace", "teacher", "dft"])
    assert "lattice constant a0" in text and "-0.18" in text and "ace err%" in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eos_points": 3}, "eos_points must be an integer >= 5"),
        ({"eos_span": 0.5}, "eos_span"),
        ({"phonon_supercell": [2, 2]}, "phonon_supercell must be three integers"),
        ({"smearing": 0.1}, "unknown validation settings"),
    ],
)
def test_bad_settings(settings, message):
    assert message in properties.validate_settings(settings)


def test_md_stability_verdict():
    summary = {
        "trajectories": [
            {
                "stop_reason": "completed",
                "time_ps": 3.0,
                "steps": 3000,
                "max_gamma": 1.4,
                "temperature": 1200.0,
                "atoms": 64,
                "nve_drift_mev_per_atom_per_ps": -0.2,
            },
            {
                "stop_reason": "collapsed",
                "time_ps": 1.25,
                "steps": 1250,
                "max_gamma": 9.0,
                "temperature": 1500.0,
                "atoms": 64,
            },
        ]
    }
    verdict = md_stability(summary)
    assert verdict["md_stable"] is False and verdict["md_stable_ps"] == 1.25
    assert verdict["md_stop_reason"] == "collapsed,completed" and verdict["md_max_gamma"] == 9.0
    assert verdict["md_nve_drift_mev_per_atom_per_ps"] == pytest.approx(0.2)
