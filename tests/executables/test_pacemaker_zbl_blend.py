"""The fit driver moves pacemaker's ACE-to-ZBL blend below the data: no force wall just below the shortest pair."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
from ase import Atoms

POTENTIAL = pathlib.Path(__file__).resolve().parents[1] / "parsers" / "fixtures" / "pyacemaker_pacemaker" / "_potential"


def dimer_forces(path: pathlib.Path, distances: np.ndarray) -> np.ndarray:
    from pyace import PyACECalculator

    calculator = PyACECalculator(str(path))
    forces = []
    for distance in distances:
        atoms = Atoms("Si2", positions=[[0, 0, 0], [distance, 0, 0]], cell=[20, 20, 20], pbc=False)
        atoms.calc = calculator
        forces.append(float(atoms.get_forces()[1, 0]))
    return np.array(forces)


def test_the_blend_moves_below_the_data_and_removes_the_wall_just_below_it(driver, tmp_path):
    """Real potential of a Si fit (r_in 1.86 A, pacemaker's delta_in 0.1 A). Measured before: 77 eV/A at 1.80 A."""
    original = POTENTIAL / "output_potential.yaml"
    moved = tmp_path / "output_potential.yaml"
    shutil.copy(original, moved)
    assert driver.move_zbl_blend(str(moved), 0.2, 0.3) == [[pytest.approx(1.6602, abs=1e-4), 0.3]]
    just_below = np.linspace(1.70, 1.86, 17)  # up to 0.16 A below the shortest pair of the data
    before, after = dimer_forces(original, just_below), dimer_forces(moved, just_below)
    assert np.abs(before).max() > 50.0  # pacemaker's 0.1 A blend right below the data: a wall of tens of eV/A
    assert np.abs(after).max() < 20.0 and (after > 0).all()  # ACE alone: repulsive, no wall
    far_below = dimer_forces(moved, np.linspace(0.8, 1.35, 12))  # pure ZBL: strongly repulsive
    assert (far_below > 40.0).all()


def test_repulsion_is_widened_only_when_pacemaker_added_it(driver, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.yaml").write_text("fit: {repulsion: auto}\n")
    assert driver.repulsion_added()
    (tmp_path / "input.yaml").write_text("fit: {maxiter: 3}\n")
    assert not driver.repulsion_added()
