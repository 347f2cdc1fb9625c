"""Routing between the tiers and the energy reference: the seed's mocked-tier tests and the middle band."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_pyacemaker.routing import (
    apply_energy_shift,
    fit_energy_shift,
    route,
    validate_thresholds,
)


class MockTier:
    """A tier that returns fixed results and counts its calls."""

    def __init__(self, results):
        self.results = results
        self.calls = 0

    def __call__(self, rows):
        self.calls += 1
        return [self.results[row] for row in rows]


def label(uncertainties, fast: MockTier, slow: MockTier, accept=0.05, call_dft=0.05, **kwargs):
    """Fast tier on everything, slow tier on what routing sends it: the shape of the work chain's outline."""
    rows = list(range(len(uncertainties)))
    fast_labels = fast(rows)
    routes = route(np.array(uncertainties), ["ok"] * len(rows), accept, call_dft, **kwargs)
    dft_rows = [row for row in rows if routes[row] == "dft"]
    slow_labels = dict(zip(dft_rows, slow(dft_rows), strict=True)) if dft_rows else {}
    return [slow_labels.get(row, fast_labels[row]) for row in rows if routes[row] in ("mace", "dft")], routes


def test_confident_fast_result_never_calls_the_slow_tier():
    fast, slow = MockTier(["fast"]), MockTier(["slow"])
    labels, _ = label([0.01], fast, slow)
    assert fast.calls == 1 and slow.calls == 0
    assert labels == ["fast"]


def test_unsure_fast_result_is_relabelled_by_the_slow_tier():
    fast, slow = MockTier(["fast"]), MockTier(["slow"])
    labels, _ = label([0.1], fast, slow)
    assert fast.calls == 1 and slow.calls == 1
    assert labels == ["slow"]


@pytest.mark.parametrize(
    ("policy", "middle_route"),
    [("discard", "deferred"), ("mace", "mace"), ("dft", "dft")],
)
def test_middle_band_policies(policy, middle_route):
    routes = route(np.array([0.01, 0.05, 0.2]), ["ok"] * 3, accept=0.02, call_dft=0.1, policy=policy)
    assert routes.tolist() == ["mace", middle_route, "dft"]


def test_boundaries_are_inclusive_for_acceptance():
    routes = route(np.array([0.02, 0.1, 0.1000001]), ["ok"] * 3, accept=0.02, call_dft=0.1)
    assert routes.tolist() == ["mace", "deferred", "dft"]


def test_flagged_structures_are_rejected_never_sent_to_dft():
    routes = route(np.array([np.inf, np.inf, 0.5]), ["too_close", "isolated_atom", "ok"], 0.02, 0.1)
    assert routes.tolist() == ["rejected", "rejected", "dft"]


def test_dft_budget_takes_the_most_uncertain_first():
    routes = route(np.array([0.3, 0.9, 0.5, 0.01]), ["ok"] * 4, 0.02, 0.1, max_dft_calls=2)
    assert routes.tolist() == ["over_budget", "dft", "dft", "mace"]
    assert route(np.array([0.3]), ["ok"], 0.02, 0.1, max_dft_calls=0).tolist() == ["over_budget"]


def test_a_single_model_cannot_route():
    with pytest.raises(ValueError, match="two or more models"):
        route(np.array([np.nan]), ["ok"], 0.02, 0.1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0.2, 0.1, "discard", None), "must be <= threshold_call_dft"),
        ((-0.1, 0.1, "discard", None), "uncertainty_threshold must be finite and >= 0"),
        ((0.1, float("nan"), "discard", None), "threshold_call_dft must be finite"),
        ((0.1, 0.2, "keep", None), "middle_band_policy must be one of"),
        ((0.1, 0.2, "mace", -1), "max_dft_calls must be >= 0"),
    ],
)
def test_threshold_validation(arguments, message):
    assert message in validate_thresholds(*arguments)
    assert validate_thresholds(0.1, 0.1, "discard", 5) is None


def test_energy_shift_recovers_per_element_offsets():
    rng = np.random.default_rng(0)
    true_shift = {"Si": -0.3, "O": 1.2}
    compositions = [{"Si": int(rng.integers(1, 9)), "O": int(rng.integers(0, 9))} for _ in range(12)]
    mace = rng.normal(size=12)
    dft = [apply_energy_shift(c, e, true_shift) for c, e in zip(compositions, mace, strict=True)]
    fitted = fit_energy_shift(compositions, dft, mace)
    assert fitted == pytest.approx(true_shift)
    assert fit_energy_shift([{"Si": 8}], [-10.0], [-12.0]) == pytest.approx({"Si": 0.25})
