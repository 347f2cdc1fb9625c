"""The evaluation module: RMSEs overall and by domain, with the median and the worst structure beside them."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_pyacemaker.evaluation import parity_data, rmse_overall_and_by_domain


def row(index: int, domain: str, force_error: float, energy_error: float = 0.0, atoms: int = 2) -> dict:
    forces_ref = np.zeros((atoms, 3))
    return {
        "index": index,
        "domain": domain,
        "atoms": atoms,
        "energy_ref": -10.0,
        "energy": -10.0 + energy_error * atoms,
        "forces_ref": forces_ref,
        "forces": forces_ref + force_error,
    }


def test_rmse_median_and_worst_structure_overall_and_by_domain():
    rows = [row(0, "rattle", 0.01), row(1, "rattle", 0.03), row(2, "vacancy", 3.0, energy_error=0.1)]
    measured = rmse_overall_and_by_domain(rows)
    overall = measured["overall"]
    assert overall["structures"] == 3
    assert overall["rmse_f_mev_per_a"] == pytest.approx(1000 * np.sqrt((0.01**2 + 0.03**2 + 3.0**2) / 3))
    assert overall["median_structure_f_mev_per_a"] == pytest.approx(30.0)  # one blow-up does not move the median
    assert overall["worst_structure_f_mev_per_a"] == pytest.approx(3000.0)
    assert overall["worst_structure"] == 2  # the row of the test set, to look at it
    assert overall["rmse_e_mev_per_atom"] == pytest.approx(1000 * np.sqrt(0.1**2 / 3))
    rattle = measured["by_domain"]["rattle"]
    assert rattle["worst_structure"] == 1 and rattle["rmse_e_mev_per_atom"] == 0.0


def test_parity_data_is_per_atom_and_per_component():
    data = parity_data([row(0, "a", 0.5, atoms=3)])
    assert data["energy_ref"].tolist() == pytest.approx([-10.0 / 3])
    assert data["forces_ace"].shape == (9,) and data["forces_ref"].shape == (9,)


def test_extrapolation_grades_flag_structures_and_missing_grades_add_nothing():
    rows = [row(0, "rattle", 0.01), row(1, "rattle", 0.03), row(2, "vacancy", 3.0)]
    for item, gamma in zip(rows, (0.7, 3.0, 42.0), strict=True):
        item["max_gamma"] = gamma
    overall = rmse_overall_and_by_domain(rows)["overall"]
    assert overall["max_gamma"] == 42.0 and overall["worst_structure_gamma"] == 42.0
    assert overall["extrapolating_structures"] == [2]  # above GAMMA_EXTRAPOLATING (5)
    for item in rows:
        item["max_gamma"] = float("nan")  # a potential without active set
    assert "max_gamma" not in rmse_overall_and_by_domain(rows)["overall"]
