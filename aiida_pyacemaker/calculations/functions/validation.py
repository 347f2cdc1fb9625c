"""Calcfunctions of the ``ValidationWorkChain``: the validation structures, DFT labels, EOS fits and the table.

Every engine labels the same kind of structures (``aiida_pyacemaker.properties``); the properties and the comparison
table are computed from the labels here, so the graph links each number to the calculations behind it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ... import properties
from ...data.labelled_structures import LabelledStructuresData
from ...data.structure_set import StructureSetData, as_text
from ...dft import pw_label_from_outputs


def task_set(structures: list) -> StructureSetData:
    """A structure set with the arrays ``task``, ``task_value`` and ``relax`` from the structures' ``info``."""
    node = StructureSetData.from_atoms(structures)
    node.set_array("task", as_text([atoms.info["task"] for atoms in structures], 32))
    node.set_array("task_value", np.array([atoms.info["task_value"] for atoms in structures], dtype=float))
    node.set_array("relax", np.array([atoms.info["relax"] for atoms in structures], dtype=bool))
    return node


def labelled_tasks(tasks: StructureSetData, labelled: LabelledStructuresData) -> list:
    """The labelled rows as ASE ``Atoms`` (calculator with the labels) with the task of their row in ``info``."""
    rows = labelled.to_atoms()
    if len(rows) != len(tasks):
        raise ValueError(f"{len(rows)} labelled rows for {len(tasks)} validation structures")
    for atoms, task, value in zip(rows, tasks.get_array("task"), tasks.get_array("task_value"), strict=True):
        atoms.info.update(task=str(task), task_value=float(value))
    return rows


@calcfunction
def eos_tasks(prototype: orm.StructureData, settings: orm.Dict) -> StructureSetData:
    """Stage 1: the primitive cell at the EOS volumes."""
    return task_set(properties.eos_structures(prototype.get_ase(), settings.get_dict()))


@calcfunction
def fit_equation_of_state(tasks: StructureSetData, labelled: LabelledStructuresData) -> orm.Dict:
    """Birch-Murnaghan through one engine's EOS labels: V0 per atom, E0 per atom, B0 (GPa), B0'."""
    rows = labelled_tasks(tasks, labelled)
    fit = properties.fit_eos([a.get_volume() for a in rows], [a.get_potential_energy() for a in rows], len(rows[0]))
    return orm.Dict(fit)


@calcfunction
def property_tasks(
    prototype: orm.StructureData, equation_of_state: orm.Dict, settings: orm.Dict, which: orm.List
) -> StructureSetData:
    """Stage 2 at the engine's own equilibrium volume: strains, phonon displacements, vacancy supercells (the
    properties in ``which``)."""
    structures = properties.property_structures(
        prototype.get_ase(), equation_of_state["volume_per_atom"], settings.get_dict(), which.get_list()
    )
    return task_set(structures)


@calcfunction
def dft_labels(tasks: StructureSetData, **outputs) -> LabelledStructuresData:
    """The labels of ``PwBaseWorkChain`` per row (``parameters_<i>``, ``trajectory_<i>``, and ``structure_<i>`` for
    a relaxation, whose final geometry replaces the row's)."""
    atoms_list = tasks.to_atoms()
    for index, atoms in enumerate(atoms_list):
        label = pw_label_from_outputs(outputs[f"parameters_{index:03d}"], outputs[f"trajectory_{index:03d}"])
        if f"structure_{index:03d}" in outputs:
            atoms.positions = outputs[f"structure_{index:03d}"].get_ase().positions
        atoms.info.update(REF_energy=label["energy"], REF_stress=label["stress"])
        atoms.arrays["REF_forces"] = label["forces"]
    return LabelledStructuresData.from_atoms(atoms_list, source="dft")


def md_stability(summary: dict[str, Any]) -> dict[str, Any]:
    """The verdict of an ``AceMdCalculation`` in ``stability`` mode: stable when every trajectory completed;
    ``md_stable_ps``: the shortest time a trajectory ran before it failed, or its whole length (NVT + NVE)."""
    trajectories = summary["trajectories"]
    drifts = np.array([record.get("nve_drift_mev_per_atom_per_ps", np.nan) for record in trajectories], dtype=float)
    return {
        "md_stable": all(record["stop_reason"] == "completed" for record in trajectories),
        "md_stable_ps": float(min(record["time_ps"] for record in trajectories)),
        "md_max_gamma": float(max(record["max_gamma"] for record in trajectories)),
        "md_nve_drift_mev_per_atom_per_ps": float(np.nanmax(np.abs(drifts))) if np.isfinite(drifts).any() else None,
        "md_stop_reason": ",".join(sorted({record["stop_reason"] for record in trajectories})),
        "md_temperatures": [record["temperature"] for record in trajectories],
        "md_atoms": int(trajectories[0]["atoms"]),
    }


@calcfunction
def validation_table(prototype: orm.StructureData, settings: orm.Dict, **nodes) -> dict[str, orm.Data]:
    """The properties of every engine and the table. ``nodes``: ``eos_tasks``, and per engine ``<engine>_eos`` and,
    where it ran stage 2, ``<engine>_property_tasks`` and ``<engine>_properties`` (labelled sets); optionally
    ``md_summary``.

    Outputs ``table`` (Dict: ``rows``, ``properties`` per engine, ``md``) and ``curves`` (ArrayData: EOS points,
    phonon bands and DOS per engine)."""
    engines = [engine for engine in ("ace", "teacher", "dft") if f"{engine}_eos" in nodes]
    atoms = prototype.get_ase()
    values: dict[str, dict[str, Any]] = {}
    curves = orm.ArrayData()
    for engine in engines:
        stage_2 = []
        if f"{engine}_properties" in nodes:
            stage_2 = labelled_tasks(nodes[f"{engine}_property_tasks"], nodes[f"{engine}_properties"])
        result = properties.compute_properties(
            atoms, labelled_tasks(nodes["eos_tasks"], nodes[f"{engine}_eos"]), stage_2, settings.get_dict()
        )
        for key in [key for key, value in result.items() if isinstance(value, np.ndarray)]:
            curves.set_array(f"{engine}_{key}", result.pop(key))
        if "band_labels" in result:
            curves.base.attributes.set("band_labels", result.pop("band_labels"))
        values[engine] = result
    content: dict[str, Any] = {
        "engines": engines,
        "rows": properties.comparison_table(values),
        "properties": values,
        "prototype": atoms.get_chemical_formula(),
    }
    if "md_summary" in nodes:
        content["md"] = md_stability(nodes["md_summary"].get_dict())
    return {"table": orm.Dict(content), "curves": curves}
