"""Calibration of the teacher's uncertainty: a map from the raw value to the expected true force error (eV/A).

The raw uncertainty (a committee spread, or a latent distance for a single model) has no unit a user can judge.
On every structure that DFT labelled, the teacher's prediction is known too, so its true error is known: the
largest, over atoms, norm of the difference between the teacher's and DFT's force on the atom. A power law
``error = a * raw ** b`` is fitted by least squares in log-log space on those pairs; its median estimate is the
calibrated uncertainty, and the routing thresholds apply to it. With fewer than ``MIN_POWER_LAW_POINTS`` pairs the
exponent is 1 (a ratio). The fit is refitted as DFT rows accumulate (the points are kept in the calibration).

Pure functions on arrays: the calcfunctions, the plots and the benchmarks use the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Fewer pairs than this: the exponent is fixed at 1 and only the ratio is fitted.
MIN_POWER_LAW_POINTS = 4
#: The exponent is kept in this range, so that calibration keeps the order of the raw values.
EXPONENT_BOUNDS = (0.05, 4.0)
#: Raw values or errors below this are treated as this (the logarithm needs positive numbers).
FLOOR = 1e-6


def largest_force_error(predicted: np.ndarray, reference: np.ndarray) -> float:
    """The largest, over atoms, norm of the force difference (eV/A)."""
    difference = np.asarray(predicted, dtype=float) - np.asarray(reference, dtype=float)
    return float(np.linalg.norm(difference, axis=1).max()) if len(difference) else 0.0


def spearman(first: Sequence[float], second: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than three pairs."""
    from scipy.stats import spearmanr

    if len(first) < 3:
        return float("nan")
    return float(spearmanr(first, second).statistic)


def fit_calibration(raw: Sequence[float], error: Sequence[float], kind: str) -> dict[str, Any]:
    """The calibration content fitted on (raw uncertainty, true largest force error) pairs of one teacher.

    Pairs with a non-finite value are left out. Raises ``ValueError`` when no pair is left.
    """
    raw_values, errors = np.asarray(raw, dtype=float), np.asarray(error, dtype=float)
    usable = np.isfinite(raw_values) & np.isfinite(errors)
    x, y = np.log(np.maximum(raw_values[usable], FLOOR)), np.log(np.maximum(errors[usable], FLOOR))
    if len(x) == 0:
        raise ValueError("no (uncertainty, error) pair to calibrate on")
    exponent = 1.0
    if len(x) >= MIN_POWER_LAW_POINTS and np.ptp(x) > 0:
        exponent = float(np.clip(np.polyfit(x, y, 1)[0], *EXPONENT_BOUNDS))
    intercept = float(np.mean(y - exponent * x))
    residual = y - (intercept + exponent * x)
    return {
        "model": "power_law",
        "uncertainty_kind": kind,
        "prefactor": float(np.exp(intercept)),
        "exponent": exponent,
        "log_residual_std": float(residual.std()) if len(x) > 1 else None,
        "points": len(x),
        "spearman": spearman(raw_values[usable], errors[usable]) if len(x) >= 3 else None,
        "raw": [float(v) for v in raw_values[usable]],
        "error": [float(v) for v in errors[usable]],
        "unit": "eV/A",
    }


def refit(
    previous: dict[str, Any] | None, raw: Sequence[float] | np.ndarray, error: Sequence[float], kind: str
) -> dict[str, Any]:
    """A calibration on the pairs of ``previous`` (when it is of the same ``kind``) and the new ones."""
    old_raw: list[float] = []
    old_error: list[float] = []
    if previous is not None and previous.get("uncertainty_kind") == kind:
        old_raw, old_error = list(previous["raw"]), list(previous["error"])
    return fit_calibration([*old_raw, *np.asarray(raw, dtype=float).tolist()], [*old_error, *error], kind)


def apply_calibration(calibration: dict[str, Any] | None, raw: np.ndarray) -> np.ndarray:
    """The calibrated uncertainty (eV/A) of raw values; without a calibration the raw values. inf and NaN stay."""
    values = np.asarray(raw, dtype=float)
    if calibration is None:
        return values.copy()
    calibrated = calibration["prefactor"] * np.maximum(values, FLOOR) ** calibration["exponent"]
    return np.where(np.isfinite(values), calibrated, values)


def calibration_rows(raw: np.ndarray, status: Sequence[str] | np.ndarray, count: int) -> np.ndarray:
    """``count`` rows of usable structures spread evenly over the ranks of ``raw`` (the most uncertain included),
    so that the calibration sees the whole range. Fewer when fewer rows are usable."""
    usable = np.flatnonzero((np.asarray(status) == "ok") & np.isfinite(np.asarray(raw, dtype=float)))
    if count <= 0 or len(usable) == 0:
        return np.array([], dtype=int)
    ordered = usable[np.argsort(np.asarray(raw, dtype=float)[usable], kind="stable")]
    ranks = np.unique(np.round(np.linspace(len(ordered) - 1, 0, min(count, len(ordered)))).astype(int))
    return np.sort(ordered[ranks])
