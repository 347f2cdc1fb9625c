"""Calcfunctions of the ``IncrementalTrainingWorkChain``: history append, replay training set, forgetting."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ...data.ace_potential import AcePotentialData
from ...data.history import history_fingerprints, new_rows
from ...data.labelled_structures import LabelledStructuresData
from ...data.structure_set import load_arrays
from ...evaluation import evaluate, rmse_by_domain
from ...replay import dopt_rows, replay_count, sample_rows


@calcfunction
def select_new_rows(new_structures: LabelledStructuresData, **history: LabelledStructuresData):
    """The rows of ``new_structures`` not yet in the history (by geometry fingerprint); nothing if none."""
    rows = new_rows(new_structures, history_fingerprints(list(history.values())))
    if len(rows) == 0:
        return {}
    return {"appended": LabelledStructuresData.gather([(new_structures, rows)])}


@calcfunction
def build_training_set(new_structures: LabelledStructuresData, settings: orm.Dict, **nodes) -> dict[str, Any]:
    """All new rows plus a replay sample of the older history (``history_*`` inputs), as one training set.

    ``settings``: buffer_size, strategy, seed, min_share (the minimum replay share), replay_weight. The replay
    rows' weights are multiplied by ``replay_weight``; their ``config_type`` (domain) is kept.
    """
    config = settings.get_dict()
    older = [nodes[key] for key in sorted(key for key in nodes if key.startswith("history_"))]
    fresh = set(str(p) for p in new_structures.get_array("fingerprints"))
    count = replay_count(len(new_structures), sum(len(b) for b in older), config["buffer_size"], config["min_share"])
    parts: list[tuple[Any, Any]] = [(new_structures, np.arange(len(new_structures)))]
    report: dict[str, Any] = {"new": len(new_structures), "replay_requested": count, "strategy": config["strategy"]}
    if count:
        if config["strategy"] == "dopt" and "previous_potential" in nodes:
            pool, rows, by_maxvol = dopt_rows(older, count, nodes["previous_potential"], config["seed"])
            replay: list[tuple[Any, np.ndarray]] = [(pool, np.asarray(rows))]
            report["selected_by_maxvol"] = by_maxvol
        else:
            if config["strategy"] == "dopt":
                report["dopt_fallback"] = "no previous potential: random replay"
            replay = [(older[part], rows) for part, rows in sample_rows([len(b) for b in older], count, config["seed"])]
        # A replayed row that is also among the new ones would count twice: drop it.
        prints = load_arrays([node for node, _ in replay], ["fingerprints"])
        replay = [
            (node, np.array([r for r in rows if str(p["fingerprints"][r]) not in fresh], dtype=int))
            for (node, rows), p in zip(replay, prints, strict=True)
        ]
        parts += replay
        report["replay"] = sum(len(rows) for _, rows in replay)
    training = LabelledStructuresData.gather(parts)
    weights = training.get_array("weight").copy()
    weights[len(new_structures) :] *= config["replay_weight"]
    training.set_array("weight", weights)
    roles = np.array(["new"] * len(new_structures) + ["replay"] * (len(training) - len(new_structures)), dtype="<U8")
    training.set_array("role", roles)
    training.base.attributes.set("replay", report)
    return {"training_set": training}


@calcfunction
def measure_forgetting(test_set: LabelledStructuresData, potential: AcePotentialData, **previous) -> orm.Dict:
    """Per domain of the frozen test set: RMSEs of the new potential, of the previous one, and new / previous;
    ``overall``: the new potential's RMSEs on the whole test set."""
    measured = evaluate(potential, test_set)
    after = measured["by_domain"]
    result: dict[str, Any] = {"after": after, "overall": measured["overall"]}
    if "previous_potential" in previous:
        before = rmse_by_domain(previous["previous_potential"], test_set)
        result["before"] = before
        result["force_rmse_ratio"] = {
            domain: after[domain]["rmse_f_mev_per_a"] / before[domain]["rmse_f_mev_per_a"] for domain in after
        }
    return orm.Dict(result)
