"""Routing of structures between the tiers, and the energy reference that puts MACE labels on DFT's scale.

Pure functions on arrays: the work chain and the tests use the same code.

Routes per structure:
* ``mace``: uncertainty <= ``uncertainty_threshold`` (accept the MACE label);
* ``dft``: uncertainty > ``threshold_call_dft``, most uncertain first, up to ``max_dft_calls``;
* ``over_budget``: would go to DFT but the budget is spent;
* ``deferred``: in the middle band (accept < u <= dft) with the ``discard`` policy: recorded, not labelled;
* ``rejected``: MACE flagged the structure (status other than ``ok``): never sent to DFT;
* ``dft_failed``: routed to DFT, but the ``PwBaseWorkChain`` failed (set when the labels are assembled).

Beside routing: the composition of a structure and the energy reference (a per-element shift) that puts teacher
energies on the DFT reference before both are mixed in one fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROUTE_DTYPE = "<U11"
ROUTES = ("mace", "dft", "over_budget", "deferred", "rejected", "dft_failed")
MIDDLE_BAND_POLICIES = ("discard", "mace", "dft")
#: Routes that cost a DFT calculation.
DFT_ROUTES = ("dft", "dft_failed")
#: Routes whose structures are labelled.
LABELLED_ROUTES = ("mace", "dft")


def dft_calls(counts: dict[str, int]) -> int:
    """The pw.x calls an oracle made, from its routing counts."""
    return sum(counts.get(name, 0) for name in DFT_ROUTES)


def route_counts(routes: np.ndarray) -> dict[str, int]:
    """How many structures took each route."""
    names, counts = np.unique(routes, return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts, strict=True)}


def validate_thresholds(accept: float, call_dft: float, policy: str, max_dft_calls: int | None) -> str | None:
    """A message for inconsistent routing settings, else None."""
    for name, value in (("uncertainty_threshold", accept), ("threshold_call_dft", call_dft)):
        if not np.isfinite(value) or value < 0:
            return f"{name} must be finite and >= 0, got {value}"
    if accept > call_dft:
        return f"uncertainty_threshold ({accept}) must be <= threshold_call_dft ({call_dft})"
    if policy not in MIDDLE_BAND_POLICIES:
        return f"middle_band_policy must be one of {MIDDLE_BAND_POLICIES}, got `{policy}`"
    if max_dft_calls is not None and max_dft_calls < 0:
        return f"max_dft_calls must be >= 0, got {max_dft_calls}"
    return None


def route(
    uncertainty: np.ndarray,
    status: Sequence[str] | np.ndarray,
    accept: float,
    call_dft: float,
    policy: str = "discard",
    max_dft_calls: int | None = None,
) -> np.ndarray:
    """The route of every structure (see the module docstring)."""
    uncertainty = np.asarray(uncertainty, dtype=float)
    flagged = np.asarray(status) != "ok"
    if np.isnan(uncertainty[~flagged]).any():
        raise ValueError("uncertainty undefined (one-model committee?): routing needs two or more models")
    routes = np.full(len(uncertainty), "deferred", dtype=ROUTE_DTYPE)
    routes[uncertainty <= accept] = "mace"
    routes[uncertainty > call_dft] = "dft"
    middle = (uncertainty > accept) & (uncertainty <= call_dft)
    if policy == "mace":
        routes[middle] = "mace"
    elif policy == "dft":
        routes[middle] = "dft"
    routes[flagged] = "rejected"
    if max_dft_calls is not None:
        candidates = np.flatnonzero(routes == "dft")
        most_uncertain_first = candidates[np.argsort(-uncertainty[candidates], kind="stable")]
        routes[most_uncertain_first[max_dft_calls:]] = "over_budget"
    return routes


def route_with_settings(uncertainty: np.ndarray, status: np.ndarray, settings: dict) -> np.ndarray:
    """``route`` with a settings mapping: ``accept``, ``call_dft``, ``policy`` and optionally ``max_dft_calls``."""
    return route(
        uncertainty, status, settings["accept"], settings["call_dft"], settings["policy"], settings.get("max_dft_calls")
    )


def composition(atoms) -> dict[str, int]:
    """Element -> number of atoms of an ASE ``Atoms``."""
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    return {str(symbol): int(count) for symbol, count in zip(symbols, counts, strict=True)}


def fit_energy_shift(
    compositions: list[dict[str, int]], dft_energies: Sequence[float], mace_energies: Sequence[float]
) -> dict[str, float]:
    """Per-element shift (eV/atom) d minimising sum_s (E_dft - E_mace - sum_el n_el d_el)^2 (least squares).

    With one element this is the mean of (E_dft - E_mace) / N. Elements that no pair constrains get no shift.
    """
    elements = sorted({element for composition in compositions for element in composition})
    if not compositions:
        return {}
    matrix = np.array([[composition.get(element, 0) for element in elements] for composition in compositions], float)
    difference = np.asarray(dft_energies, dtype=float) - np.asarray(mace_energies, dtype=float)
    shift, *_ = np.linalg.lstsq(matrix, difference, rcond=None)
    return {element: float(value) for element, value in zip(elements, shift, strict=True)}


def apply_energy_shift(composition: dict[str, int], energy: float, shift: dict[str, float]) -> float:
    """A MACE energy on the DFT reference."""
    return float(energy + sum(count * shift.get(element, 0.0) for element, count in composition.items()))


def energy_reference_content(shift: dict[str, float], fitted_on: int) -> dict:
    """The content of an ``energy_reference`` node: the shift per atom and how many DFT structures fixed it."""
    return {"shift_per_atom": shift, "fitted_on_dft_structures": fitted_on, "unit": "eV/atom"}
