"""Evaluation of an ACE potential on labelled structures: one set of predictions feeds the RMSEs (overall and by
domain), the parity data of the plots, the work chains' forgetting measure and the benchmarks.

Units: energies in eV (RMSE in meV/atom), forces in eV/A (RMSE in meV/A, per force component).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .data.ace_potential import AcePotentialData
    from .data.labelled_structures import LabelledStructuresData

EV_TO_MEV = 1000.0


def predictions(potential: AcePotentialData, test_set: LabelledStructuresData) -> list[dict[str, Any]]:
    """Per structure of ``test_set``: domain (config type), atoms, reference and ACE energy (eV) and forces (eV/A)."""
    calculator = potential.get_calculator(active_set=False)
    rows = []
    for index, atoms in enumerate(test_set.to_atoms()):
        row = {
            "index": index,
            "domain": atoms.info.get("config_type") or "default",
            "atoms": len(atoms),
            "energy_ref": atoms.get_potential_energy(),
            "forces_ref": atoms.get_forces(),
        }
        atoms.calc = calculator
        rows.append({**row, "energy": atoms.get_potential_energy(), "forces": atoms.get_forces()})
    return rows


def rmse(energy_errors_per_atom: list, force_errors: list, rows: list[int] | None = None) -> dict[str, Any]:
    """Energy (meV/atom) and per-component force (meV/A) RMSE of the given errors (eV/atom, eV/A arrays, one per
    structure), with the median and the worst structure's force RMSE beside them (``rows``: their set indices)."""
    per_structure = np.array([np.sqrt(np.mean(np.square(errors))) for errors in force_errors]) * EV_TO_MEV
    worst = int(np.argmax(per_structure))
    return {
        "rmse_e_mev_per_atom": float(np.sqrt(np.mean(np.square(energy_errors_per_atom)))) * EV_TO_MEV,
        "rmse_f_mev_per_a": float(np.sqrt(np.mean(np.concatenate(force_errors) ** 2))) * EV_TO_MEV,
        "median_structure_f_mev_per_a": float(np.median(per_structure)),
        "worst_structure_f_mev_per_a": float(per_structure[worst]),
        "worst_structure": (rows or list(range(len(force_errors))))[worst],
        "structures": len(energy_errors_per_atom),
    }


def rmse_overall_and_by_domain(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"overall": RMSEs over all rows, "by_domain": {config type: RMSEs}}`` of :func:`predictions` rows."""
    errors: dict[str, dict[str, list]] = {}
    for row in rows:
        bucket = errors.setdefault(row["domain"], {"energy": [], "forces": [], "rows": []})
        bucket["energy"].append((row["energy"] - row["energy_ref"]) / row["atoms"])
        bucket["forces"].append((row["forces"] - row["forces_ref"]).ravel())
        bucket["rows"].append(row["index"])
    every = {key: [x for e in errors.values() for x in e[key]] for key in ("energy", "forces", "rows")}
    return {
        "overall": rmse(every["energy"], every["forces"], every["rows"]),
        "by_domain": {domain: rmse(e["energy"], e["forces"], e["rows"]) for domain, e in errors.items()},
    }


def evaluate(potential: AcePotentialData, test_set: LabelledStructuresData) -> dict[str, Any]:
    """RMSEs of ``potential`` on ``test_set``, overall and per config type (one evaluation)."""
    return rmse_overall_and_by_domain(predictions(potential, test_set))


def rmse_by_domain(potential: AcePotentialData, test_set: LabelledStructuresData) -> dict[str, dict[str, float]]:
    """Energy (meV/atom) and force (meV/A, per component) RMSE of ``potential`` on each config type."""
    return evaluate(potential, test_set)["by_domain"]


def parity_data(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Reference and ACE energies per atom (eV/atom) and force components (eV/A) of :func:`predictions` rows."""
    return {
        "energy_ref": np.array([row["energy_ref"] / row["atoms"] for row in rows]),
        "energy_ace": np.array([row["energy"] / row["atoms"] for row in rows]),
        "forces_ref": np.concatenate([row["forces_ref"].ravel() for row in rows]),
        "forces_ace": np.concatenate([row["forces"].ravel() for row in rows]),
    }
