"""The committee script's screening: a degenerate cell gets a status at once; no row can stall the batch."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk


def flat_cell() -> Atoms:
    """The case that hung matscipy's neighbour list: one lattice vector of 1e-6 A, periodic."""
    return Atoms("Si2", positions=[[0, 0, 0], [1.2, 1.2, 0]], cell=[[3.8, 0, 0], [0, 3.8, 0], [0, 0, 1e-6]], pbc=True)


@pytest.mark.parametrize(
    ("atoms", "expected"),
    [
        (bulk("Si", "diamond", a=5.43), False),
        (flat_cell(), True),
        (Atoms("Si", cell=[[1e-9, 0, 0], [0, 4, 0], [0, 0, 4]], pbc=True), True),  # near-zero volume
        (Atoms("Si", cell=[[0.05, 0, 0], [0, 4, 0], [0, 0, 4]], pbc=[True, False, False]), True),
        (Atoms("Si2", positions=[[0, 0, 0], [2.0, 0, 0]], cell=[0, 0, 0], pbc=False), False),  # a cluster
    ],
)
def test_degenerate_cells_are_recognised_before_any_neighbour_search(script, atoms, expected):
    assert script.degenerate_cell(atoms, cutoff=5.0) is expected


def test_a_degenerate_row_leaves_the_good_rows_alone(script):
    good = bulk("Si", "diamond", a=5.43, cubic=True)
    start = time.perf_counter()
    statuses = script.screen([good, flat_cell(), good.copy()], {14}, 0.5, 4.5, timeout=30.0)
    assert statuses == ["ok", "degenerate_cell", "ok"]
    assert time.perf_counter() - start < 20


def test_a_row_that_runs_past_the_timeout_gets_a_status_and_the_rest_go_on(script, monkeypatch):
    original = script.structure_status

    def slow_on_second(atoms, *settings):
        if len(atoms) == 3:
            time.sleep(60)  # stands in for a neighbour search that never returns
        return original(atoms, *settings)

    monkeypatch.setattr(script, "structure_status", slow_on_second)  # the forked worker sees the patch
    rows = [bulk("Si", "diamond", a=5.43), Atoms("Si3", positions=np.eye(3) * 2.3, cell=[6, 6, 6], pbc=True)]
    rows.append(bulk("Si", "diamond", a=5.43))
    start = time.perf_counter()
    statuses = script.screen(rows, {14}, 0.5, 4.5, timeout=1.0)
    assert statuses == ["ok", "timeout", "ok"]
    assert time.perf_counter() - start < 15
