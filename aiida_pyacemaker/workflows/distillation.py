"""``DistillationWorkChain``: distil a MACE committee and a few DFT calculations into an ACE potential.

Iteration 0 (Phase 1, zero-shot distillation): a seeded candidate pool around the prototypes is labelled by the
``TieredOracleWorkChain`` (MACE, DFT where the committee is unsure) and ACE is fitted by the
``IncrementalTrainingWorkChain``. Later iterations (Phase 4): the committee is fine-tuned on every DFT structure
of the campaign (``MaceTrainCalculation``, one job per member), its energy reference is fitted again on those
structures, surrogate perturbations around the last DFT structures are labelled by the fine-tuned committee and
ACE is delta-updated (warm start, replay). Without the ``fine_tune`` namespace a later iteration draws a fresh
pool instead. The loop stops when the DFT budget is spent, the test force RMSE reaches the target, nothing was
above the DFT threshold, or after ``max_iterations``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_, while_

from ..calculations.mace import MaceCalculation
from ..calculations.mace_train import MaceTrainCalculation, training_rows
from ..data.ace_potential import AcePotentialData
from ..data.labelled_structures import LabelledStructuresData
from ..data.mace_model import MaceModelData
from ..data.structure_set import StructureSetData
from .candidates import generate_candidates, validate_policies
from .incremental_training import IncrementalTrainingWorkChain
from .routing import energy_reference_content, fit_energy_shift
from .tiered_oracle import TieredOracleWorkChain, composition

# aiida's annotations accept only ``WorkChain`` methods in conditionals, not a subclass's: untyped aliases.
loop_while: Any = while_
run_if: Any = if_

#: Routes that cost a DFT calculation.
DFT_ROUTES = ("dft", "dft_failed")


def dft_calls(counts: dict[str, int]) -> int:
    """The pw.x calls an oracle made, from its routing counts."""
    return sum(counts.get(name, 0) for name in DFT_ROUTES)


#: At least this many DFT structures before the committee is fine-tuned on them.
MIN_FINE_TUNE_STRUCTURES = 2


@calcfunction
def select_source(source: orm.Str, **sets: LabelledStructuresData) -> dict[str, LabelledStructuresData]:
    """The rows of ``sets`` (in key order) labelled by ``source``; nothing when there is none."""
    parts = [(sets[key], np.flatnonzero(sets[key].get_array("source") == source.value)) for key in sorted(sets)]
    if not any(len(rows) for _, rows in parts):
        return {}
    return {"selected": LabelledStructuresData.gather(parts)}


@calcfunction
def fit_reference(dft_set: LabelledStructuresData, mace_results: orm.ArrayData) -> orm.Dict:
    """The per-element shift that puts this committee's energies on the DFT reference, from the DFT rows."""
    compositions = [composition(atoms) for atoms in dft_set.to_atoms()]
    mace_energies = mace_results.get_array("energy")
    shift = fit_energy_shift(compositions, dft_set.get_array("energy").tolist(), mace_energies.tolist())
    return orm.Dict(energy_reference_content(shift, len(dft_set)))


@calcfunction
def summarise(settings: orm.Dict, **nodes) -> orm.Dict:
    """One record per iteration from the graph: routes, DFT calls, test RMSE and forgetting (``<kind>_<k>`` nodes)."""
    iterations = []
    total_calls = 0
    for index in range(settings["iterations"]):
        counts = nodes[f"routing_{index:03d}"].base.attributes.get("counts")
        total_calls += dft_calls(counts)
        record: dict[str, Any] = {"iteration": index, "routes": counts, "dft_calls_total": total_calls}
        if f"fit_metrics_{index:03d}" in nodes:
            record["train_force_rmse_mev_per_a"] = nodes[f"fit_metrics_{index:03d}"].get("train_rmse_f_mev_per_a")
        if f"forgetting_{index:03d}" in nodes:
            forgetting = nodes[f"forgetting_{index:03d}"]
            record["test_force_rmse_mev_per_a"] = forgetting["overall"]["rmse_f_mev_per_a"]
            record["test_energy_rmse_mev_per_atom"] = forgetting["overall"]["rmse_e_mev_per_atom"]
            record["forgetting"] = forgetting.get("force_rmse_ratio", {})
        iterations.append(record)
    return orm.Dict({**settings.get_dict(), "dft_calls": total_calls, "per_iteration": iterations})


def validate_pool(value: orm.Dict, _) -> str | None:
    content = value.get_dict()
    if unknown := sorted(set(content) - {"policies", "seed"}):
        return f"pool: unknown keys {unknown}; allowed: ['policies', 'seed']"
    seed = content.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return f"pool.seed: expected an integer >= 0, got {seed!r}"
    return validate_policies(content.get("policies"), "pool.policies")


def validate_surrogates(value: orm.Dict, _) -> str | None:
    return validate_policies(value.get_dict(), "fine_tune.surrogates")


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    if inputs["dft_budget"].value < 0:
        return f"dft_budget must be >= 0, got {inputs['dft_budget'].value}"
    if inputs["max_iterations"].value < 1:
        return f"max_iterations must be >= 1, got {inputs['max_iterations'].value}"
    if "target_force_rmse" in inputs:
        if inputs["target_force_rmse"].value <= 0:
            return f"target_force_rmse must be > 0 (meV/A), got {inputs['target_force_rmse'].value}"
        if "test_set" not in inputs:
            return "target_force_rmse needs a test_set to measure the force RMSE on"
    if "test_set" in inputs and set(inputs["test_set"].get_array("source")) != {"dft"}:
        return "test_set: the held-out set must be DFT-labelled (source `dft` on every row)"
    if missing := sorted(set(inputs["prototypes"].elements) - set(_committee_elements(inputs["oracle"]["mace"]))):
        return f"prototypes contain {missing}, which the MACE committee does not know"
    return None


def _committee_elements(mace_inputs: dict[str, Any]) -> list[str]:
    elements = [set(model.elements) for model in mace_inputs["models"].values()]
    return sorted(set.intersection(*elements)) if elements else []


class DistillationWorkChain(WorkChain):
    """Zero-shot distillation from MACE, then fine-tune MACE on the DFT structures and delta-update ACE."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("campaign", valid_type=orm.Str, help="Campaign name: its history group holds every label.")
        spec.input("prototypes", valid_type=StructureSetData, help="Structures the candidates are made around.")
        spec.input("pool", valid_type=orm.Dict, validator=validate_pool, help="Candidate policies and seed.")
        spec.expose_inputs(
            TieredOracleWorkChain, namespace="oracle", exclude=("structures", "energy_reference", "max_dft_calls")
        )
        spec.expose_inputs(
            IncrementalTrainingWorkChain,
            namespace="training",
            exclude=("campaign", "new_structures", "previous_potential", "test_set"),
        )
        spec.input("test_set", valid_type=LabelledStructuresData, required=False, help="Frozen held-out DFT set.")
        spec.input("dft_budget", valid_type=orm.Int, help="DFT calls allowed over the whole campaign.")
        spec.input("max_iterations", valid_type=orm.Int, default=lambda: orm.Int(3))
        spec.input("target_force_rmse", valid_type=orm.Float, required=False, help="Stop below this (meV/A).")
        spec.input_namespace("fine_tune", required=False, populate_defaults=False, help="Phase 4; off when absent.")
        spec.input("fine_tune.code", valid_type=orm.AbstractCode, help="mace_run_train code.")
        spec.input("fine_tune.parameters", valid_type=orm.Dict, help="mace_run_train options (protocol fine_tune).")
        spec.input("fine_tune.surrogates", valid_type=orm.Dict, validator=validate_surrogates)
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            loop_while(cls.should_continue)(
                run_if(cls.should_fine_tune)(
                    cls.fine_tune_committee,
                    cls.calibrate_committee,
                    cls.inspect_calibration,
                ),
                cls.generate_structures,
                cls.label,
                cls.inspect_labels,
                run_if(cls.has_new_labels)(cls.fit, cls.inspect_fit),
            ),
            cls.results,
        )
        spec.output("potential", valid_type=AcePotentialData, help="The final ACE potential.")
        spec.output("summary", valid_type=orm.Dict, help="Per iteration: routes, DFT calls, test RMSE, forgetting.")
        spec.output("energy_reference", valid_type=orm.Dict)
        spec.output_namespace("committee", valid_type=MaceModelData, dynamic=True, help="The fine-tuned committee.")
        spec.exit_code(420, "ERROR_ORACLE_FAILED", message="TieredOracleWorkChain<{pk}> failed: {message}")
        spec.exit_code(421, "ERROR_NOTHING_LABELLED", message="The first pool gave no labelled structure: {message}")
        spec.exit_code(422, "ERROR_TRAINING_FAILED", message="IncrementalTrainingWorkChain<{pk}> failed: {message}")
        spec.exit_code(423, "ERROR_FINE_TUNE_FAILED", message="MaceTrainCalculation<{pk}> failed: {message}")
        spec.exit_code(424, "ERROR_CALIBRATION_FAILED", message="MaceCalculation<{pk}> failed: {message}")

    @classmethod
    def get_builder_from_protocol(
        cls,
        prototypes: StructureSetData,
        models: dict[str, MaceModelData],
        mace_code: orm.AbstractCode,
        pw_code: orm.Code,
        pacemaker_code: orm.AbstractCode,
        campaign: str,
        mace_train_code: orm.AbstractCode | None = None,
        test_set: LabelledStructuresData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        pseudo_family: str | None = None,
    ):
        """A builder filled from ``protocols/distillation.yaml``; ``overrides`` replaces top-level protocol keys.

        Phase 4 (fine-tuning) is on when ``mace_train_code`` is given. The DFT tier's cutoffs and k-points come from
        the protocol's ``dft`` entry and the first prototype.
        """
        from ..protocols import get_protocol, get_protocol_parameters
        from ..setup.pseudos import DEFAULT_FAMILY
        from .dft import get_pw_tier_inputs

        settings = {**get_protocol("distillation", protocol), **(overrides or {})}
        dft = settings["dft"]
        atoms = prototypes.to_atoms()
        pw_overrides: dict[str, Any] = {"kpoints_distance": dft["kpoints_distance"]}
        parameters = dict(dft.get("pw_parameters") or {})  # merged into pw.x's namelists, e.g. cutoffs
        if dft.get("bands_per_atom"):  # enough empty bands that smearing needs no restart
            nbnd = dft["bands_per_atom"] * max(len(a) for a in atoms)
            parameters["SYSTEM"] = {**parameters.get("SYSTEM", {}), "nbnd": nbnd}
        if parameters:
            pw_overrides["pw"] = {"parameters": parameters}
        inputs: dict[str, Any] = {
            "campaign": orm.Str(campaign),
            "prototypes": prototypes,
            "pool": orm.Dict(settings["pool"]),
            "oracle": {
                "mace": {"code": mace_code, "models": models},
                "dft": get_pw_tier_inputs(
                    pw_code,
                    orm.StructureData(ase=atoms[0]),
                    pseudo_family=pseudo_family or DEFAULT_FAMILY,
                    stringency=dft["stringency"],
                    overrides=pw_overrides,
                ),
                "uncertainty_threshold": orm.Float(settings["uncertainty_threshold"]),
                "threshold_call_dft": orm.Float(settings["threshold_call_dft"]),
                "middle_band_policy": orm.Str(settings["middle_band_policy"]),
                "max_concurrent_dft": orm.Int(settings["max_concurrent_dft"]),
            },
            "training": {
                "pacemaker": {
                    "code": pacemaker_code,
                    "parameters": orm.Dict(
                        {
                            **get_protocol_parameters("pacemaker", settings["pacemaker_protocol"]),
                            **settings["pacemaker_overrides"],
                        }
                    ),
                },
                "replay_buffer_size": orm.Int(settings["replay_buffer_size"]),
                "replay_strategy": orm.Str(settings["replay_strategy"]),
            },
            "dft_budget": orm.Int(settings["dft_budget"]),
            "max_iterations": orm.Int(settings["max_iterations"]),
        }
        if settings.get("target_force_rmse") is not None:
            inputs["target_force_rmse"] = orm.Float(settings["target_force_rmse"])
        if test_set is not None:
            inputs["test_set"] = test_set
        if mace_train_code is not None:
            tune = get_protocol_parameters("mace_train", settings["fine_tune_protocol"])
            inputs["fine_tune"] = {
                "code": mace_train_code,
                "parameters": orm.Dict({**tune, **settings["fine_tune_overrides"]}),
                "surrogates": orm.Dict(settings["surrogates"]),
            }
        builder = cls.get_builder()
        builder._update(inputs)
        return builder

    def setup(self):
        self.ctx.iteration = -1  # the index of the current iteration; -1 before the first
        self.ctx.fine_tuned = False
        self.ctx.dft_calls = 0
        self.ctx.committee = dict(self.inputs.oracle.mace.models)
        self.ctx.labelled = {}
        self.ctx.records = {}
        self.ctx.stop_reason = None

    def should_continue(self) -> bool:
        """Iteration 0 always runs; then the first stop criterion that holds ends the loop."""
        if self.ctx.iteration < 0:
            return True
        if self.ctx.stop_reason is None:
            self.ctx.stop_reason = self.stop_reason()
        if self.ctx.stop_reason:
            self.report(f"stop: {self.ctx.stop_reason}")
            return False
        return True

    def stop_reason(self) -> str | None:
        last = self.ctx.last_counts
        if self.ctx.iteration + 1 >= self.inputs.max_iterations.value:
            return f"max_iterations ({self.inputs.max_iterations.value}) reached"
        # A spent budget still leaves one fine-tuning pass on the DFT structures of the last iteration.
        unused_dft = "fine_tune" in self.inputs and "dft_last" in self.ctx
        if self.ctx.dft_calls >= self.inputs.dft_budget.value and not unused_dft:
            return f"DFT budget spent ({self.ctx.dft_calls} of {self.inputs.dft_budget.value} calls)"
        rmse = self.ctx.get("test_force_rmse")
        if "target_force_rmse" in self.inputs and rmse is not None and rmse <= self.inputs.target_force_rmse.value:
            return f"target reached: test force RMSE {rmse:.1f} <= {self.inputs.target_force_rmse.value} meV/A"
        if not any(last.get(name, 0) for name in (*DFT_ROUTES, "over_budget")):
            return "nothing above the DFT threshold in the last iteration"
        return None

    # Phase 4: fine-tune the committee on the campaign's DFT structures and refit its energy reference.
    def should_fine_tune(self) -> bool:
        if "fine_tune" not in self.inputs or self.ctx.iteration < 0:
            return False
        selected = select_source(orm.Str("dft"), **self.ctx.labelled)
        if "selected" not in selected or len(selected["selected"]) < MIN_FINE_TUNE_STRUCTURES:
            self.report(f"fewer than {MIN_FINE_TUNE_STRUCTURES} DFT structures: the committee is not fine-tuned")
            return False
        self.ctx.dft_set = selected["selected"]
        return True

    def fine_tune_committee(self):
        """One MaceTrainCalculation per member, each from its own model (members stay different)."""
        parameters = self.inputs.fine_tune.parameters.get_dict()
        rows = training_rows(len(self.ctx.dft_set), parameters.get("valid_fraction"))
        if int(parameters.get("batch_size", 10)) > rows:  # a few DFT structures: smaller batches, not a failure
            parameters["batch_size"] = rows
            self.report(f"fine-tuning batch_size lowered to {rows}: only {rows} training structures")
        futures = {}
        for index, (key, model) in enumerate(sorted(self.ctx.committee.items())):
            futures[f"fine_tune_{key}"] = self.submit(
                MaceTrainCalculation,
                code=self.inputs.fine_tune.code,
                training_set=self.ctx.dft_set,
                foundation_model=model,
                seeds=orm.List([index]),
                parameters=orm.Dict(parameters),
            )
        self.report(f"fine-tuning {len(futures)} committee members on {len(self.ctx.dft_set)} DFT structures")
        return ToContext(**futures)

    def calibrate_committee(self):
        """The fine-tuned committee on the DFT structures: its energy reference comes from these results."""
        committee = {}
        for index, key in enumerate(sorted(self.ctx.committee)):
            node = self.ctx[f"fine_tune_{key}"]
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_FINE_TUNE_FAILED.format(pk=node.pk, message=node.exit_message or "")
            committee[key] = node.outputs.models[f"s{index}"]
        self.ctx.committee = committee
        self.ctx.fine_tuned = True
        return ToContext(
            calibration=self.submit(MaceCalculation, **self._mace_inputs(), structure_set=self.ctx.dft_set)
        )

    def inspect_calibration(self):
        node = self.ctx.calibration
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_CALIBRATION_FAILED.format(pk=node.pk, message=node.exit_message or "")
        self.ctx.energy_reference = fit_reference(self.ctx.dft_set, node.outputs.results)
        self.report(f"fine-tuned committee: energy shift {self.ctx.energy_reference['shift_per_atom']} eV/atom")
        return None

    def generate_structures(self):
        """The pool (iteration 0, or every iteration without fine-tuning) or surrogates around the DFT structures."""
        self.ctx.iteration += 1
        seed = orm.Int(self.inputs.pool.get("seed", 0) + self.ctx.iteration)
        if self.ctx.iteration > 0 and "fine_tune" in self.inputs and "dft_last" in self.ctx:
            self.ctx.candidates = generate_candidates(self.ctx.dft_last, self.inputs.fine_tune.surrogates, seed)
            kind = "surrogates around the last DFT structures"
        else:
            policies = orm.Dict(self.inputs.pool["policies"])
            self.ctx.candidates = generate_candidates(self.inputs.prototypes, policies, seed)
            kind = "candidate pool"
        self.report(f"iteration {self.ctx.iteration}: {len(self.ctx.candidates)} structures ({kind})")

    def label(self):
        inputs = self.exposed_inputs(TieredOracleWorkChain, namespace="oracle")
        inputs["mace"] = self._mace_inputs()
        inputs["max_dft_calls"] = orm.Int(max(self.inputs.dft_budget.value - self.ctx.dft_calls, 0))
        if inputs["max_dft_calls"].value == 0:
            inputs.pop("dft", None)
        if "energy_reference" in self.ctx:
            inputs["energy_reference"] = self.ctx.energy_reference
        return ToContext(oracle=self.submit(TieredOracleWorkChain, structures=self.ctx.candidates, **inputs))

    def inspect_labels(self):
        node = self.ctx.oracle
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_ORACLE_FAILED.format(pk=node.pk, message=node.exit_message or "")
        counts = node.outputs.routing.base.attributes.get("counts")
        self.ctx.last_counts = counts
        self.ctx.dft_calls += dft_calls(counts)
        self.ctx.energy_reference = node.outputs.energy_reference
        self.ctx.records[f"routing_{self.ctx.iteration:03d}"] = node.outputs.routing
        self.report(
            f"iteration {self.ctx.iteration}: structures by route {counts}; "
            f"DFT calls so far {self.ctx.dft_calls} of {self.inputs.dft_budget.value}"
        )
        if "labelled" not in node.outputs:
            if self.ctx.iteration == 0:
                return self.exit_codes.ERROR_NOTHING_LABELLED.format(message=f"routes {counts}")
            self.ctx.stop_reason = "the last iteration labelled no structure"
            return None
        labelled = node.outputs.labelled
        self.ctx.labelled[f"iteration_{self.ctx.iteration:03d}"] = labelled
        dft_rows = select_source(orm.Str("dft"), last=labelled)
        if "selected" in dft_rows:
            self.ctx.dft_last = dft_rows["selected"]
        else:
            self.ctx.pop("dft_last", None)
        return None

    def has_new_labels(self) -> bool:
        return f"iteration_{self.ctx.iteration:03d}" in self.ctx.labelled

    def fit(self):
        inputs = self.exposed_inputs(IncrementalTrainingWorkChain, namespace="training")
        inputs.update(
            campaign=self.inputs.campaign, new_structures=self.ctx.labelled[f"iteration_{self.ctx.iteration:03d}"]
        )
        if "potential" in self.ctx:
            inputs["previous_potential"] = self.ctx.potential
        if "test_set" in self.inputs:
            inputs["test_set"] = self.inputs.test_set
        return ToContext(training=self.submit(IncrementalTrainingWorkChain, **inputs))

    def inspect_fit(self):
        node = self.ctx.training
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_TRAINING_FAILED.format(pk=node.pk, message=node.exit_message or "")
        self.ctx.potential = node.outputs.potential
        index = f"{self.ctx.iteration:03d}"
        self.ctx.records[f"fit_metrics_{index}"] = node.outputs.fit_metrics
        message = f"iteration {self.ctx.iteration}: potential {node.outputs.potential.pk}"
        if "forgetting" in node.outputs:
            forgetting = node.outputs.forgetting
            self.ctx.records[f"forgetting_{index}"] = forgetting
            self.ctx.test_force_rmse = forgetting["overall"]["rmse_f_mev_per_a"]
            message += f"; test force RMSE {self.ctx.test_force_rmse:.1f} meV/A"
            if "force_rmse_ratio" in forgetting:
                ratios = {domain: round(value, 3) for domain, value in forgetting["force_rmse_ratio"].items()}
                message += f"; forgetting (after/before) {ratios}"
        self.report(message)
        return None

    def results(self):
        settings = {
            "iterations": self.ctx.iteration + 1,
            "dft_budget": self.inputs.dft_budget.value,
            "stop_reason": self.ctx.stop_reason or "",
        }
        summary = summarise(orm.Dict(settings), **self.ctx.records)
        self.out("summary", summary)
        self.out("potential", self.ctx.potential)
        self.out("energy_reference", self.ctx.energy_reference)
        if self.ctx.fine_tuned:
            self.out("committee", self.ctx.committee)
        self.report(
            f"done: {summary['dft_calls']} DFT calls, {settings['iterations']} iterations, potential pk "
            f"{self.ctx.potential.pk}"
        )

    def _mace_inputs(self) -> dict[str, Any]:
        """The oracle's MACE inputs with the current committee."""
        inputs = self.exposed_inputs(TieredOracleWorkChain, namespace="oracle")["mace"]
        return {**inputs, "models": self.ctx.committee}
