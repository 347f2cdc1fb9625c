"""``IncrementalTrainingWorkChain``: append to the campaign history, sample a replay set, refit ACE warm-started."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_

from ..calculations.pacemaker import PacemakerCalculation
from ..data.ace_potential import AcePotentialData
from ..data.history import get_history, history_batches, history_fingerprints, new_rows
from ..data.labelled_structures import LabelledStructuresData
from ..data.structure_set import load_arrays
from .replay import STRATEGIES, replay_count, sample_rows

EV_TO_MEV = 1000.0


@calcfunction
def select_new_rows(new_structures: LabelledStructuresData, **history: LabelledStructuresData):
    """The rows of ``new_structures`` not yet in the history (by geometry fingerprint); nothing if none."""
    rows = new_rows(new_structures, history_fingerprints(list(history.values())))
    if len(rows) == 0:
        return {}
    return {"appended": LabelledStructuresData.gather([(new_structures, rows)])}


def dopt_rows(older: list[LabelledStructuresData], count: int, potential: AcePotentialData, seed: int):
    """D-optimal (MaxVol) choice with pacemaker's selection and ``potential``, from a seeded pool of <= 10 x count
    older rows; topped up at random when MaxVol selects fewer."""
    import pandas as pd
    from pyace import BBasisConfiguration
    from pyace.aceselect import select_structures_maxvol

    sizes = [len(batch) for batch in older]
    pool = sample_rows(sizes, min(sum(sizes), 10 * count), seed)
    pool_set = LabelledStructuresData.gather([(older[part], rows) for part, rows in pool])
    frame = pd.DataFrame({"ase_atoms": pool_set.to_atoms()})
    path = potential.write_files(_tempdir())["yaml"]
    selected = select_structures_maxvol(frame, BBasisConfiguration(str(path)), max_structures=count)
    chosen = [int(index) for index in selected.index]
    taken = set(chosen)
    remaining = [row for row in range(len(pool_set)) if row not in taken]
    top_up = np.random.default_rng(seed).permutation(remaining)[: count - len(chosen)]
    return pool_set, sorted(chosen + [int(row) for row in top_up]), len(chosen)


def _tempdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="pyacemaker-dopt-")


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


def predictions(potential: AcePotentialData, test_set: LabelledStructuresData) -> list[dict[str, Any]]:
    """Per structure of ``test_set``: domain (config type), atoms, reference and ACE energy (eV) and forces (eV/A)."""
    calculator = potential.get_calculator(active_set=False)
    rows = []
    for atoms in test_set.to_atoms():
        row = {
            "domain": atoms.info.get("config_type") or "default",
            "atoms": len(atoms),
            "energy_ref": atoms.get_potential_energy(),
            "forces_ref": atoms.get_forces(),
        }
        atoms.calc = calculator
        rows.append({**row, "energy": atoms.get_potential_energy(), "forces": atoms.get_forces()})
    return rows


def _errors_by_domain(potential: AcePotentialData, test_set: LabelledStructuresData) -> dict[str, dict[str, list]]:
    """Per config type: energy errors per atom (eV) and force component errors (eV/A) of ``potential``."""
    errors: dict[str, dict[str, list]] = {}
    for row in predictions(potential, test_set):
        bucket = errors.setdefault(row["domain"], {"energy": [], "forces": []})
        bucket["energy"].append((row["energy"] - row["energy_ref"]) / row["atoms"])
        bucket["forces"].append((row["forces"] - row["forces_ref"]).ravel())
    return errors


def _rmse(energy: list, forces: list) -> dict[str, float]:
    return {
        "rmse_e_mev_per_atom": float(np.sqrt(np.mean(np.square(energy)))) * EV_TO_MEV,
        "rmse_f_mev_per_a": float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) * EV_TO_MEV,
        "structures": len(energy),
    }


def rmse_by_domain(potential: AcePotentialData, test_set: LabelledStructuresData) -> dict[str, dict[str, float]]:
    """Energy (meV/atom) and force (meV/A, per component) RMSE of ``potential`` on each config type."""
    return rmse_overall_and_by_domain(potential, test_set)["by_domain"]


def rmse_overall_and_by_domain(potential: AcePotentialData, test_set: LabelledStructuresData) -> dict[str, Any]:
    """``{"overall": RMSEs over the whole set, "by_domain": rmse_by_domain}`` from one evaluation."""
    errors = _errors_by_domain(potential, test_set)
    return {
        "overall": _rmse(
            [x for e in errors.values() for x in e["energy"]], [x for e in errors.values() for x in e["forces"]]
        ),
        "by_domain": {domain: _rmse(e["energy"], e["forces"]) for domain, e in errors.items()},
    }


@calcfunction
def measure_forgetting(test_set: LabelledStructuresData, potential: AcePotentialData, **previous) -> orm.Dict:
    """Per domain of the frozen test set: RMSEs of the new potential, of the previous one, and new / previous;
    ``overall``: the new potential's RMSEs on the whole test set."""
    measured = rmse_overall_and_by_domain(potential, test_set)
    after = measured["by_domain"]
    result: dict[str, Any] = {"after": after, "overall": measured["overall"]}
    if "previous_potential" in previous:
        before = rmse_by_domain(previous["previous_potential"], test_set)
        result["before"] = before
        result["force_rmse_ratio"] = {
            domain: after[domain]["rmse_f_mev_per_a"] / before[domain]["rmse_f_mev_per_a"] for domain in after
        }
    return orm.Dict(result)


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    if inputs["replay_buffer_size"].value < 1:
        return f"replay_buffer_size must be >= 1, got {inputs['replay_buffer_size'].value}"
    if inputs["replay_strategy"].value not in STRATEGIES:
        return f"replay_strategy must be one of {STRATEGIES}, got `{inputs['replay_strategy'].value}`"
    share = inputs["min_replay_share"].value
    if not 0 <= share <= 1:
        return f"min_replay_share must be in [0, 1], got {share}"
    if inputs["incremental_update"].value and "previous_potential" in inputs:
        missing = sorted(set(inputs["new_structures"].elements) - set(inputs["previous_potential"].elements))
        if missing:
            return (
                f"new structures contain {missing}, which the previous potential has no basis for: "
                "set incremental_update=False to refit from scratch with the new elements"
            )
    return None


class IncrementalTrainingWorkChain(WorkChain):
    """History in a group, bounded seeded replay, warm-started ACE refit, forgetting measured on a frozen test set."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("campaign", valid_type=orm.Str, help="Campaign name: its history is a group in the graph.")
        spec.input("new_structures", valid_type=LabelledStructuresData)
        spec.expose_inputs(
            PacemakerCalculation, namespace="pacemaker", exclude=("training_set", "previous_potential", "test_set")
        )
        spec.input("previous_potential", valid_type=AcePotentialData, required=False)
        spec.input("incremental_update", valid_type=orm.Bool, default=lambda: orm.Bool(True))
        spec.input("replay_buffer_size", valid_type=orm.Int, default=lambda: orm.Int(500))
        spec.input("replay_strategy", valid_type=orm.Str, default=lambda: orm.Str("random"))
        spec.input("replay_seed", valid_type=orm.Int, default=lambda: orm.Int(0), help="Recorded: rebuilds the set.")
        spec.input("min_replay_share", valid_type=orm.Float, default=lambda: orm.Float(0.2))
        spec.input("replay_weight", valid_type=orm.Float, default=lambda: orm.Float(1.0))
        spec.input(
            "test_set", valid_type=LabelledStructuresData, required=False, help="The campaign's frozen test set."
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.append_to_history,
            cls.sample_training_set,
            cls.fit,
            cls.inspect_fit,
            if_(cls.has_test_set)(cls.evaluate_forgetting),  # type: ignore[arg-type]
        )
        spec.output("potential", valid_type=AcePotentialData)
        spec.output("training_set", valid_type=LabelledStructuresData)
        spec.output("fit_metrics", valid_type=orm.Dict)
        spec.output("forgetting", valid_type=orm.Dict, required=False)
        spec.exit_code(410, "ERROR_FIT_FAILED", message="PacemakerCalculation<{pk}> failed: {message}")

    def append_to_history(self):
        """Add the rows not seen before to the campaign's group; remember the older batches for replay."""
        group = get_history(self.inputs.campaign.value)
        self.ctx.older = history_batches(group)
        history = {f"history_{index:05d}": batch for index, batch in enumerate(self.ctx.older)}
        appended = select_new_rows(self.inputs.new_structures, **history)
        if "appended" in appended:
            group.add_nodes(appended["appended"])
        added = len(appended["appended"]) if "appended" in appended else 0
        self.report(f"history `{group.label}`: {added} new of {len(self.inputs.new_structures)} rows appended")

    def sample_training_set(self):
        settings = {
            "buffer_size": self.inputs.replay_buffer_size.value,
            "strategy": self.inputs.replay_strategy.value,
            "seed": self.inputs.replay_seed.value,
            "min_share": self.inputs.min_replay_share.value,
            "replay_weight": self.inputs.replay_weight.value,
        }
        nodes: dict[str, Any] = {f"history_{index:05d}": batch for index, batch in enumerate(self.ctx.older)}
        if "previous_potential" in self.inputs:
            nodes["previous_potential"] = self.inputs.previous_potential
        training = build_training_set(self.inputs.new_structures, orm.Dict(settings), **nodes)["training_set"]
        self.ctx.training_set = training
        self.report(f"training set: {training.base.attributes.get('replay')}")

    def fit(self):
        inputs = self.exposed_inputs(PacemakerCalculation, namespace="pacemaker")
        inputs["training_set"] = self.ctx.training_set
        if "test_set" in self.inputs:
            inputs["test_set"] = self.inputs.test_set
        if self.inputs.incremental_update.value and "previous_potential" in self.inputs:
            inputs["previous_potential"] = self.inputs.previous_potential
            self.report("warm start from the previous potential")
        else:
            self.report("fit from scratch")
        return ToContext(fit=self.submit(PacemakerCalculation, **inputs))

    def inspect_fit(self):
        node = self.ctx.fit
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_FIT_FAILED.format(pk=node.pk, message=node.exit_message or "")
        self.out("potential", node.outputs.potential)
        self.out("training_set", self.ctx.training_set)
        self.out("fit_metrics", node.outputs.metrics)
        return None

    def has_test_set(self) -> bool:
        return "test_set" in self.inputs

    def evaluate_forgetting(self):
        previous = {"previous_potential": self.inputs.previous_potential} if "previous_potential" in self.inputs else {}
        forgetting = measure_forgetting(self.inputs.test_set, self.ctx.fit.outputs.potential, **previous)
        self.out("forgetting", forgetting)
        summary = {domain: round(value["rmse_f_mev_per_a"], 1) for domain, value in forgetting["after"].items()}
        self.report(f"frozen test set, force RMSE by domain (meV/A): {summary}")
        if "force_rmse_ratio" in forgetting:
            ratios = {domain: round(value, 3) for domain, value in forgetting["force_rmse_ratio"].items()}
            self.report(f"forgetting (force RMSE after / before): {ratios}")
