"""``AcePotentialData.get_calculator``: a working ASE calculator that leaves no temporary folder behind."""

from __future__ import annotations

import glob
import os
import pathlib
import tempfile

import numpy as np
from ase.build import bulk

from aiida_pyacemaker.data import AcePotentialData

POTENTIAL = pathlib.Path(__file__).resolve().parents[1] / "parsers" / "fixtures" / "pyacemaker_pacemaker" / "_potential"


def test_calculator_evaluates_and_cleans_up():
    potential = AcePotentialData.from_files(POTENTIAL / "output_potential.yaml", POTENTIAL / "output_potential.yace")
    pattern = os.path.join(tempfile.gettempdir(), "ace-potential-*")
    before = set(glob.glob(pattern))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = potential.get_calculator()
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(energy) and forces.shape == (8, 3) and np.abs(forces).max() > 0
    assert set(glob.glob(pattern)) == before
