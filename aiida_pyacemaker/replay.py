"""Replay selection: which older rows join the new structures in a refit, at random or D-optimally; seeded.

All new structures are always trained on. The remaining slots up to ``replay_buffer_size`` are filled from the
older history; at least ``min_replay_share`` x ``replay_buffer_size`` older rows are kept even when the new rows
alone fill the buffer, so the training set holds ``max(buffer, new + ceil(share x buffer))`` rows at most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

STRATEGIES = ("random", "dopt")


def replay_count(n_new: int, n_old: int, buffer_size: int, min_replay_share: float) -> int:
    """How many older rows to replay."""
    wanted = max(buffer_size - n_new, math.ceil(min_replay_share * buffer_size))
    return int(min(max(wanted, 0), n_old))


def sample_rows(part_sizes: Sequence[int], count: int, seed: int) -> list[tuple[int, np.ndarray]]:
    """``count`` rows drawn uniformly without replacement over all parts: [(part index, sorted rows), ...]."""
    sizes = np.asarray(part_sizes, dtype=int)
    total = int(sizes.sum())
    if count > total:
        raise ValueError(f"cannot draw {count} rows from a history of {total}")
    flat = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    part_of = np.searchsorted(bounds, flat, side="right") - 1
    return [(int(part), flat[part_of == part] - bounds[part]) for part in np.unique(part_of)]


def dopt_rows(older: list, count: int, potential: Any, seed: int) -> tuple[Any, list[int], int]:
    """D-optimal (MaxVol) choice of ``count`` rows with pacemaker's selection and ``potential``.

    Works on a seeded pool of at most 10 x ``count`` rows of the ``older`` labelled sets; tops up at random when
    MaxVol selects fewer. Returns (the pool as one ``LabelledStructuresData``, chosen pool rows, rows by MaxVol).
    The potential's files live in a temporary folder that is removed afterwards.
    """
    import tempfile

    import pandas as pd
    from pyace import BBasisConfiguration
    from pyace.aceselect import select_structures_maxvol

    from .data.labelled_structures import LabelledStructuresData

    sizes = [len(batch) for batch in older]
    pool = sample_rows(sizes, min(sum(sizes), 10 * count), seed)
    pool_set = LabelledStructuresData.gather([(older[part], rows) for part, rows in pool])
    frame = pd.DataFrame({"ase_atoms": pool_set.to_atoms()})
    with tempfile.TemporaryDirectory(prefix="pyacemaker-dopt-") as folder:
        path = potential.write_files(folder)["yaml"]
        selected = select_structures_maxvol(frame, BBasisConfiguration(str(path)), max_structures=count)
    chosen = [int(index) for index in selected.index]
    taken = set(chosen)
    remaining = [row for row in range(len(pool_set)) if row not in taken]
    top_up = np.random.default_rng(seed).permutation(remaining)[: count - len(chosen)]
    return pool_set, sorted(chosen + [int(row) for row in top_up]), len(chosen)
