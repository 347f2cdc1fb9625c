"""A campaign's history in the provenance graph: an AiiDA group of ``LabelledStructuresData`` batches.

Group label ``pyacemaker/campaign/<name>/history``; each member is one batch of labelled rows appended by an
``IncrementalTrainingWorkChain``. Rows are deduplicated by geometry fingerprint when they are appended.
"""

from __future__ import annotations

import numpy as np
from aiida import orm

from .labelled_structures import LabelledStructuresData
from .structure_set import load_arrays


class HistoryGroup(orm.Group):
    """The labelled structures a campaign has trained on, in the order they were added."""


def history_label(campaign: str) -> str:
    return f"pyacemaker/campaign/{campaign}/history"


def get_history(campaign: str) -> HistoryGroup:
    """The campaign's history group, created when missing."""
    group, _ = HistoryGroup.collection.get_or_create(history_label(campaign))
    assert isinstance(group, HistoryGroup)
    return group


def history_batches(group: orm.Group) -> list[LabelledStructuresData]:
    """The batches in the order they were added (by node id)."""
    query = orm.QueryBuilder().append(orm.Group, filters={"id": group.pk}, tag="group")
    query.append(LabelledStructuresData, with_group="group", project="*", tag="batch")
    query.order_by({"batch": {"id": "asc"}})
    return query.all(flat=True)


def history_fingerprints(batches: list[LabelledStructuresData]) -> set[str]:
    """Every geometry fingerprint in the history (the batches read in one streamed pass)."""
    return {str(p) for arrays in load_arrays(batches, ["fingerprints"]) for p in arrays["fingerprints"]}


def new_rows(candidates: LabelledStructuresData, known: set[str]) -> np.ndarray:
    """Rows of ``candidates`` whose geometry is neither in ``known`` nor repeated earlier in ``candidates``."""
    seen = set(known)
    rows = []
    for row, fingerprint in enumerate(candidates.get_array("fingerprints")):
        if str(fingerprint) not in seen:
            seen.add(str(fingerprint))
            rows.append(row)
    return np.array(rows, dtype=int)
