"""``AcePotentialData``: a pacemaker ACE potential: B-basis ``.yaml`` (refittable), ``.yace`` and optional ``.asi``."""

from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Any

import numpy as np
import yaml
from aiida import orm
from ase.calculators.calculator import Calculator, all_changes

YAML_NAME = "potential.yaml"
YACE_NAME = "potential.yace"
ASI_NAME = "potential.asi"


def describe_basis(path: str | pathlib.Path) -> dict[str, Any]:
    """Elements, cutoff, number of functions and reference energies of a B-basis YAML file."""
    content = yaml.safe_load(pathlib.Path(path).read_text())
    blocks = content.get("species", [])
    elements = sorted({block["speciesblock"] for block in blocks if len(block["speciesblock"].split()) == 1})
    cutoff = max((float(block.get("rcutij", 0)) for block in blocks), default=0.0)
    metadata = content.get("metadata", {}) or {}
    reference = metadata.get("reference_energy")
    try:
        from pyace import BBasisConfiguration

        num_functions = int(BBasisConfiguration(str(path)).total_number_of_functions)
    except ImportError:
        num_functions = sum(len(block.get("nbody", [])) for block in blocks)
    return {
        "elements": elements,
        "cutoff": cutoff,
        "num_functions": num_functions,
        "reference_energy": json.loads(reference) if isinstance(reference, str) else reference,
    }


def reference_offset(symbols: list[str], reference: dict[str, float] | None) -> np.ndarray:
    """Per-atom energy to add to an ACE prediction: pacemaker fits E - sum E_ref(element) + shift * N_atoms."""
    reference = reference or {}
    shift = float(reference.get("shift", 0.0))
    return np.array([float(reference.get(symbol, 0.0)) - shift for symbol in symbols])


class ReferencedAceCalculator(Calculator):
    """Wraps ``PyACECalculator`` and adds the reference energies back, so energies are totals (comparable with
    the DFT and MACE labels). Forces, stress and ``gamma`` are passed through."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, ace_calculator, reference: dict[str, float] | None, **kwargs):
        super().__init__(**kwargs)
        self.ace = ace_calculator
        self.reference = reference

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        self.ace.calculate(self.atoms, properties, system_changes)
        results = dict(self.ace.results)
        offset = reference_offset(self.atoms.get_chemical_symbols(), self.reference)
        for key in ("energy", "free_energy"):
            if key in results:
                results[key] = float(results[key]) + float(offset.sum())
        if "energies" in results:
            results["energies"] = np.asarray(results["energies"]) + offset
        self.results = results


class AcePotentialData(orm.Data):
    """An ACE potential. Refit only from the ``.yaml``; evaluate with the ``.yace`` (ASE, LAMMPS); the ``.asi``
    active set gives the extrapolation grade gamma (with the ``.yaml`` only)."""

    @classmethod
    def from_files(
        cls, yaml_path: str | pathlib.Path, yace_path: str | pathlib.Path | None = None, asi_path=None, **attributes
    ) -> AcePotentialData:
        node = cls()
        node.base.repository.put_object_from_file(str(yaml_path), YAML_NAME)
        if yace_path:
            node.base.repository.put_object_from_file(str(yace_path), YACE_NAME)
        if asi_path:
            node.base.repository.put_object_from_file(str(asi_path), ASI_NAME)
        for key, value in {**describe_basis(yaml_path), **attributes}.items():
            node.base.attributes.set(key, value)
        node.base.attributes.set("has_active_set", bool(asi_path))
        return node

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get("elements")

    @property
    def cutoff(self) -> float:
        return self.base.attributes.get("cutoff")

    @property
    def num_functions(self) -> int:
        return self.base.attributes.get("num_functions")

    @property
    def reference_energy(self) -> dict[str, float] | None:
        return self.base.attributes.get("reference_energy")

    @property
    def has_active_set(self) -> bool:
        return self.base.attributes.get("has_active_set", False)

    @property
    def has_yace(self) -> bool:
        """Whether the ``.yace`` file is there (an interim potential has only the ``.yaml``)."""
        return YACE_NAME in self.base.repository.list_object_names()

    @property
    def is_interim(self) -> bool:
        """Saved by pacemaker during a fit that did not finish: continue from it, do not ship it."""
        return self.base.attributes.get("interim", False)

    def get_yaml(self) -> str:
        return self.base.repository.get_object_content(YAML_NAME, mode="r")

    def write_files(self, folder: str | pathlib.Path) -> dict[str, pathlib.Path]:
        """Write the potential's files into ``folder``; return their paths by suffix."""
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in self.base.repository.list_object_names():
            target = folder / name
            target.write_bytes(self.base.repository.get_object_content(name, mode="rb"))
            paths[target.suffix.lstrip(".")] = target
        return paths

    def get_calculator(self, active_set: bool = True, total_energy: bool = True) -> Calculator:
        """A ready ASE calculator. With the active set (when present) it reports the per-atom ``gamma``.

        pacemaker fits energies minus per-element reference energies; ``total_energy=True`` adds them back
        (``ReferencedAceCalculator``), ``False`` returns the bare ``PyACECalculator`` (what LAMMPS computes).
        """
        from pyace import PyACECalculator

        # pyace reads the basis and the active set into memory: the files are not needed afterwards.
        with tempfile.TemporaryDirectory(prefix="ace-potential-") as folder:
            paths = self.write_files(folder)
            calculator = PyACECalculator(str(paths["yaml"]))
            if active_set and "asi" in paths:
                calculator.set_active_set(str(paths["asi"]))
        return ReferencedAceCalculator(calculator, self.reference_energy) if total_energy else calculator
