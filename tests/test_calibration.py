"""Calibration of the teacher's uncertainty: fit, refit, application and the rows chosen to calibrate on."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_pyacemaker.calibration import (
    apply_calibration,
    calibration_rows,
    fit_calibration,
    largest_force_error,
    refit,
)


def test_a_power_law_is_recovered_from_exact_pairs():
    raw = np.array([0.01, 0.03, 0.1, 0.3, 1.0])
    calibration = fit_calibration(raw, 2.0 * raw**0.5, "latent")
    assert calibration["prefactor"] == pytest.approx(2.0)
    assert calibration["exponent"] == pytest.approx(0.5)
    assert calibration["spearman"] == pytest.approx(1.0)
    assert calibration["points"] == 5 and calibration["uncertainty_kind"] == "latent"
    assert apply_calibration(calibration, np.array([0.04]))[0] == pytest.approx(0.4)


def test_few_points_fit_a_ratio_and_non_finite_pairs_are_left_out():
    calibration = fit_calibration([0.1, 0.2, np.inf], [0.3, 0.6, 1.0], "committee")
    assert calibration["exponent"] == 1.0 and calibration["prefactor"] == pytest.approx(3.0)
    assert calibration["points"] == 2 and calibration["spearman"] is None
    with pytest.raises(ValueError, match=r"no .* pair"):
        fit_calibration([np.nan], [0.1], "committee")


def test_an_unrelated_uncertainty_keeps_the_order_and_is_reported_by_its_rank_correlation():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 1.0, 50)
    calibration = fit_calibration(raw, rng.uniform(0.1, 0.2, 50), "latent")
    assert calibration["exponent"] >= 0.05  # the order of the raw values is kept
    assert abs(calibration["spearman"]) < 0.4


def test_inf_and_nan_stay_and_no_calibration_keeps_the_raw_values():
    calibration = fit_calibration([0.1, 0.2, 0.4, 0.8], [0.2, 0.4, 0.8, 1.6], "committee")
    values = apply_calibration(calibration, np.array([np.inf, np.nan, 0.1]))
    assert np.isinf(values[0]) and np.isnan(values[1]) and values[2] == pytest.approx(0.2)
    assert apply_calibration(None, np.array([0.3])).tolist() == [0.3]


def test_a_refit_keeps_earlier_points_of_the_same_kind_only():
    first = fit_calibration([0.1, 0.2], [0.1, 0.2], "committee")
    assert refit(first, [0.4], [0.4], "committee")["points"] == 3
    assert refit(first, [0.4], [0.4], "latent")["points"] == 1


def test_calibration_rows_span_the_range_and_skip_flagged_structures():
    raw = np.array([0.5, 0.1, np.inf, 0.9, 0.3, 0.7])
    status = ["ok", "ok", "too_close", "ok", "ok", "ok"]
    rows = calibration_rows(raw, status, 3)
    assert rows.tolist() == [0, 1, 3]  # lowest (0.1), middle (0.5), highest (0.9)
    assert calibration_rows(raw, status, 10).tolist() == [0, 1, 3, 4, 5]
    assert calibration_rows(raw, status, 0).tolist() == []


def test_the_true_error_is_the_largest_atomic_force_difference():
    teacher = np.zeros((3, 3))
    dft = np.array([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0], [0.1, 0.0, 0.0]])
    assert largest_force_error(teacher, dft) == pytest.approx(0.5)
