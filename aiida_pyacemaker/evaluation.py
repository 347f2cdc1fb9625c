"""Evaluation of an ACE potential on labelled structures: one set of predictions feeds the RMSEs (overall and by
domain), the parity data of the plots, the work chains' forgetting measure and the benchmarks.

Units: energies in eV (RMSE in meV/atom), forces in eV/A (RMSE in meV/A, per force component). With the potential's
active set, every structure's largest extrapolation grade gamma is reported beside the errors, and a structure with
gamma above ``GAMMA_EXTRAPOLATING`` is flagged (pacemaker's practice: gamma <= 1 interpolation, up to a few mild
extrapolation, above 5 an extrapolation whose numbers should not be trusted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .data.ace_potential import AcePotentialData
    from .data.labelled_structures import LabelledStructuresData

EV_TO_MEV = 1000.0
#: A structure whose largest per-atom extrapolation grade is above this is flagged as extrapolating.
GAMMA_EXTRAPOLATING = 5.0


def predictions(potential: AcePotentialData, test_set: LabelledStructuresData) -> list[dict[str, Any]]:
    """Per structure of ``test_set``: domain (config type), atoms, reference and ACE energy (eV) and forces (eV/A),
    and the largest extrapolation grade gamma (NaN without an active set)."""
    calculator = potential.get_calculator(active_set=True)
    graded = potential.has_active_set  # without an active set pyace reports gamma = 0: not a grade
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
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        gamma = calculator.results.get("gamma") if graded else None
        max_gamma = float(np.max(gamma)) if gamma is not None and len(gamma) else float("nan")
        rows.append({**row, "energy": energy, "forces": forces, "max_gamma": max_gamma})
    return rows


def rmse(
    energy_errors_per_atom: list, force_errors: list, rows: list[int] | None = None, gammas: list | None = None
) -> dict[str, Any]:
    """Energy (meV/atom) and per-component force (meV/A) RMSE of the given errors (eV/atom, eV/A arrays, one per
    structure), with the median and the worst structure's force RMSE beside them (``rows``: their set indices) and,
    with ``gammas`` (largest gamma per structure), the largest gamma and the structures above ``GAMMA_EXTRAPOLATING``.
    """
    per_structure = np.array([np.sqrt(np.mean(np.square(errors))) for errors in force_errors]) * EV_TO_MEV
    worst = int(np.argmax(per_structure))
    indices = rows or list(range(len(force_errors)))
    extra: dict[str, Any] = {}
    if gammas is not None and np.isfinite(gammas).any():
        values = np.asarray(gammas, dtype=float)
        extra = {
            "max_gamma": float(np.nanmax(values)),
            "worst_structure_gamma": float(values[worst]),
            "extrapolating_structures": [indices[i] for i in np.flatnonzero(values > GAMMA_EXTRAPOLATING)],
        }
    return {
        "rmse_e_mev_per_atom": float(np.sqrt(np.mean(np.square(energy_errors_per_atom)))) * EV_TO_MEV,
        "rmse_f_mev_per_a": float(np.sqrt(np.mean(np.concatenate(force_errors) ** 2))) * EV_TO_MEV,
        "median_structure_f_mev_per_a": float(np.median(per_structure)),
        "worst_structure_f_mev_per_a": float(per_structure[worst]),
        "worst_structure": indices[worst],
        "structures": len(energy_errors_per_atom),
        **extra,
    }


def rmse_overall_and_by_domain(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"overall": RMSEs over all rows, "by_domain": {config type: RMSEs}}`` of :func:`predictions` rows."""
    errors: dict[str, dict[str, list]] = {}
    for row in rows:
        bucket = errors.setdefault(row["domain"], {"energy": [], "forces": [], "rows": [], "gammas": []})
        bucket["energy"].append((row["energy"] - row["energy_ref"]) / row["atoms"])
        bucket["forces"].append((row["forces"] - row["forces_ref"]).ravel())
        bucket["rows"].append(row["index"])
        bucket["gammas"].append(row.get("max_gamma", float("nan")))
    keys = ("energy", "forces", "rows", "gammas")
    every = {key: [x for e in errors.values() for x in e[key]] for key in keys}
    return {
        "overall": rmse(*(every[key] for key in keys)),
        "by_domain": {domain: rmse(*(e[key] for key in keys)) for domain, e in errors.items()},
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
