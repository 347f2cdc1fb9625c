"""``LabelledStructuresData``: a ``StructureSetData`` whose rows also carry labels.

Per row: energy, forces, stress, the label source (``mace`` or ``dft``), the uncertainty, a training weight and
the uuid of the process that made the label, besides the geometry, the uuid of the ``StructureData`` it came
from and the config type.

Units: energy eV, forces eV/A, stress eV/A^3 (ASE sign convention). Missing stress is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .structure_set import StructureSetData, as_text

SOURCES = ("mace", "dft", "other")


def _label_of(atoms, index: int, energy_key: str, forces_key: str, stress_key: str):
    """(energy, forces, stress) of one ASE ``Atoms``, from info/arrays keys or an attached calculator."""
    calc_results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    energy = atoms.info.get(energy_key, calc_results.get("energy"))
    forces = atoms.arrays.get(forces_key, calc_results.get("forces"))
    stress = atoms.info.get(stress_key, calc_results.get("stress"))
    if energy is None or not np.isfinite(float(energy)):
        raise ValueError(f"structure {index}: energy missing or not finite ({energy_key}={energy})")
    if forces is None:
        raise ValueError(f"structure {index}: forces missing (`{forces_key}` array or a calculator result)")
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
        raise ValueError(f"structure {index}: forces must be finite with shape ({len(atoms)}, 3)")
    if stress is None:
        stress = np.full((3, 3), np.nan)
    else:
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = np.asarray(stress, dtype=float)
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
    return float(energy), forces, stress


class LabelledStructuresData(StructureSetData):
    """A set of labelled structures: energies, forces, stress, label source, uncertainty and weight per row."""

    @classmethod
    def from_atoms(  # type: ignore[override]
        cls,
        structures: Sequence,
        source: str | Sequence[str] = "dft",
        uncertainty: Sequence[float] | None = None,
        weight: Sequence[float] | None = None,
        structure_uuids: Sequence[str] | None = None,
        producer_uuids: Sequence[str] | None = None,
        energy_key: str = "REF_energy",
        forces_key: str = "REF_forces",
        stress_key: str = "REF_stress",
    ) -> LabelledStructuresData:
        """Build a set from ASE ``Atoms``; a missing or non-finite label is a ``ValueError`` naming the row."""
        count = len(structures)
        sources = [source] * count if isinstance(source, str) else list(source)
        if unknown := sorted(set(sources) - set(SOURCES)):
            raise ValueError(f"unknown label source(s) {unknown}: allowed {SOURCES}")
        labels = [_label_of(atoms, i, energy_key, forces_key, stress_key) for i, atoms in enumerate(structures)]
        node = super().from_atoms(structures, structure_uuids, allow_empty=False)
        assert isinstance(node, LabelledStructuresData)
        node.set_array("energy", np.array([label[0] for label in labels]))
        node.set_array("forces", np.concatenate([label[1] for label in labels]).reshape(-1, 3))
        node.set_array("stress", np.array([label[2] for label in labels]).reshape(-1, 3, 3))
        node.set_array("source", as_text(sources, 8))
        node.set_array("uncertainty", np.asarray(uncertainty if uncertainty is not None else [np.nan] * count, float))
        node.set_array("weight", np.asarray(weight if weight is not None else [1.0] * count, dtype=float))
        # The process that made each label (MaceCalculation or PwCalculation), empty when unknown.
        node.set_array("producer_uuids", as_text(producer_uuids or [""] * count, 36))
        node.base.attributes.set("sources", {name: sources.count(name) for name in set(sources)})
        return node

    def to_atoms(self) -> list:
        """ASE ``Atoms`` with a ``SinglePointCalculator`` carrying the labels, and the row's metadata in ``info``."""
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.stress import full_3x3_to_voigt_6_stress

        offsets = self.get_array("atom_offsets")
        energy, forces, stress = self.get_array("energy"), self.get_array("forces"), self.get_array("stress")
        extra = {key: self.get_array(key) for key in ("source", "uncertainty", "weight")}
        structures = super().to_atoms()
        for index, atoms in enumerate(structures):
            results: dict[str, Any] = {
                "energy": float(energy[index]),
                "forces": forces[offsets[index] : offsets[index + 1]],
            }
            if np.isfinite(stress[index]).all():
                results["stress"] = full_3x3_to_voigt_6_stress(stress[index])
            atoms.calc = SinglePointCalculator(atoms, **results)
            for key, values in extra.items():
                atoms.info[key] = values[index].item()
        return structures

    def to_labelled_atoms(
        self,
        energy_key: str = "REF_energy",
        forces_key: str = "REF_forces",
        stress_key: str = "REF_stress",
        weight_key: str = "config_weight",
    ) -> list:
        """ASE ``Atoms`` with the labels under the given ``info``/``arrays`` keys (MACE's defaults), no calculator."""
        structures = []
        for atoms in self.to_atoms():
            results = atoms.calc.results
            atoms.calc = None
            atoms.info[energy_key] = results["energy"]
            atoms.arrays[forces_key] = results["forces"]
            if "stress" in results:
                atoms.info[stress_key] = results["stress"]
            atoms.info[weight_key] = float(atoms.info.pop("weight"))
            structures.append(atoms)
        return structures

    def write_extxyz(self, path, **keys: str) -> None:
        """Write the set as extended XYZ; ``keys`` as for :meth:`to_labelled_atoms`."""
        from ase.io import write

        write(str(path), self.to_labelled_atoms(**keys), format="extxyz")
