"""LabelledStructuresData: round trip and clear errors for broken labels."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from aiida_pyacemaker.data import LabelledStructuresData


def emt_labelled(count: int) -> list:
    structures = []
    for index in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 1 + index % 2))
        atoms.rattle(0.05, seed=index)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        structures.append(atoms)
    return structures


def test_round_trip_keeps_labels_and_metadata():
    structures = emt_labelled(3)
    node = LabelledStructuresData.from_atoms(
        structures, source=["dft", "mace", "mace"], uncertainty=[np.inf, 0.01, 0.02], weight=[2.0, 1.0, 1.0]
    )
    node.store()
    assert len(node) == 3
    assert node.base.attributes.get("sources") == {"dft": 1, "mace": 2}
    back = node.to_atoms()
    for original, copy in zip(structures, back, strict=True):
        assert copy.get_potential_energy() == pytest.approx(original.get_potential_energy())
        np.testing.assert_allclose(copy.get_forces(), original.get_forces())
        np.testing.assert_allclose(copy.get_stress(), original.get_stress())
        np.testing.assert_allclose(copy.positions, original.positions)
    assert back[0].info["source"] == "dft" and back[0].info["weight"] == 2.0


def test_labels_from_info_keys_and_missing_stress_is_nan():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["REF_energy"] = -10.0
    atoms.arrays["REF_forces"] = np.zeros((2, 3))
    node = LabelledStructuresData.from_atoms([atoms])
    assert np.isnan(node.get_array("stress")).all()
    assert "stress" not in node.to_atoms()[0].calc.results


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (lambda atoms: atoms.info.__setitem__("REF_energy", float("nan")), "energy missing or not finite"),
        (lambda atoms: atoms.arrays.pop("REF_forces"), "forces missing"),
        (lambda atoms: atoms.arrays["REF_forces"].__setitem__((0, 0), np.inf), "forces must be finite"),
    ],
)
def test_broken_labels_name_the_row(breaker, message):
    good = bulk("Si", "diamond", a=5.43)
    good.info["REF_energy"] = -10.0
    good.arrays["REF_forces"] = np.zeros((2, 3))
    broken = good.copy()
    broken.info["REF_energy"] = -10.0
    broken.arrays["REF_forces"] = np.zeros((2, 3))
    breaker(broken)
    with pytest.raises(ValueError, match=f"structure 1: {message}"):
        LabelledStructuresData.from_atoms([good, broken])


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown label source"):
        LabelledStructuresData.from_atoms(emt_labelled(1), source="vasp")
