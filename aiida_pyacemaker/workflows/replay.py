"""Replay sampling: which older rows join the new structures in a refit. Pure functions, seeded.

All new structures are always trained on. The remaining slots up to ``replay_buffer_size`` are filled from the
older history; at least ``min_replay_share`` x ``replay_buffer_size`` older rows are kept even when the new rows
alone fill the buffer, so the training set holds ``max(buffer, new + ceil(share x buffer))`` rows at most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
