"""``DistillationWorkChain``: distil a teacher (MACE) and a few DFT calculations into an ACE potential.

The four phases of a campaign (names used in code, docs and reports):

- **Phase 1, zero-shot distillation**: a seeded candidate pool around the prototypes is labelled by the
  ``TieredOracleWorkChain`` (teacher where it is sure, DFT where it is not); ACE is fitted by the
  ``IncrementalTrainingWorkChain``. This is iteration 0.
- **Phase 2, validation**: with the ``validation`` namespace, the final potential's physics (EOS, elastic constants,
  phonons, vacancy, MD stability) against the teacher and DFT (``ValidationWorkChain``): output ``validation``.
- **Phase 3, exploration**: with the ``exploration`` namespace, every iteration after the first takes its candidates
  from MD with the current ACE (``AceMdBaseWorkChain``): the frames where ACE extrapolates (gamma), reduced by
  D-optimality. The oracle labels them (teacher or DFT); its routing keeps gamma beside the teacher's uncertainty.
  An exploration that finds no extrapolating frame falls back to the other candidates.
- **Phase 4, hierarchical fine-tuning**: later iterations fine-tune the teacher on every DFT structure of the
  campaign (``MaceTrainBaseWorkChain``, one per committee member; a single foundation model with
  ``fine_tune.committee_size`` >= 2 gives that many copies with different seeds: a committee derived from it),
  refit its energy reference on those structures (``MaceBaseWorkChain``), relabel every row the old teacher
  labelled, label surrogate perturbations around the last DFT structures with it and delta-update ACE (warm start,
  replay) on the new and the relabelled rows. Without the ``fine_tune`` namespace a later iteration draws a fresh
  pool instead.

The teacher is a committee or one model. A single model's uncertainty is its latent distance to the prototypes and,
once it is fine-tuned on them, the campaign's DFT structures (a reference set that grows with them). The oracle
calibrates the uncertainty on DFT rows (``calibration_size`` rows first, then every DFT row); the calibration is
carried from one oracle to the next.

The loop stops when the DFT budget is spent (not with exploration: the teacher still labels the frames where ACE
extrapolates), the test force RMSE reaches the target, nothing was above the DFT threshold, or after
``max_iterations``.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_, while_
from plumpy.ports import PortNamespace

from ..calculations.functions.campaign import (
    fit_reference,
    generate_candidates,
    merge_labelled,
    relabel,
    select_source,
    summarise_campaign,
    teacher_reference,
)
from ..calculations.mace_train import training_rows
from ..candidates import validate_policies
from ..data.ace_potential import AcePotentialData
from ..data.labelled_structures import LabelledStructuresData
from ..data.mace_model import MaceModelData
from ..data.structure_set import StructureSetData
from ..protocols import ProtocolMixin, as_input_nodes, builder_inputs, nested_builder, without
from ..routing import DFT_ROUTES, dft_calls
from .ace_md.base import AceMdBaseWorkChain
from .incremental_training import IncrementalTrainingWorkChain
from .mace.base import MaceBaseWorkChain
from .mace_train.base import MaceTrainBaseWorkChain
from .tiered_oracle import TieredOracleWorkChain
from .validation import ValidationWorkChain

# aiida's annotations accept only ``WorkChain`` methods in conditionals, not a subclass's: untyped aliases.
loop_while: Any = while_
run_if: Any = if_

#: Phase 4 keeps a fine-tuned teacher only when it relabels at least this share of the old teacher rows within
#: their calibrated error; otherwise it has drifted and the previous teacher goes on.
MIN_RELABELLED_SHARE = 0.5
#: At least this many DFT structures before the committee is fine-tuned on them.
MIN_FINE_TUNE_STRUCTURES = 2
#: Inputs of the children that the loop sets itself, per iteration.
ORACLE_SET_BY_LOOP = ("structures", "energy_reference", "max_dft_calls", "calibration")
TRAINING_SET_BY_LOOP = ("campaign", "new_structures", "previous_potential", "test_set")
EXPLORATION_SET_BY_LOOP = ("md.potential", "md.structure_set")
VALIDATION_SET_BY_LOOP = ("potential", "prototype", "teacher", "dft")
FINE_TUNE_SET_BY_LOOP = (
    "mace_train.training_set",
    "mace_train.foundation_model",
    "mace_train.seeds",
    "mace_train.validation_set",
    "mace_train.replay_set",
    "mace_train.parent_folder",
)


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
    if "max_test_force_rmse" in inputs and inputs["max_test_force_rmse"].value <= 0:
        return f"max_test_force_rmse must be > 0 (meV/A), got {inputs['max_test_force_rmse'].value}"
    if "target_force_rmse" in inputs:
        if inputs["target_force_rmse"].value <= 0:
            return f"target_force_rmse must be > 0 (meV/A), got {inputs['target_force_rmse'].value}"
        if "test_set" not in inputs:
            return "target_force_rmse needs a test_set to measure the force RMSE on"
    if "test_set" in inputs and set(inputs["test_set"].get_array("source")) != {"dft"}:
        return "test_set: the held-out set must be DFT-labelled (source `dft` on every row)"
    if missing := sorted(
        set(inputs["prototypes"].elements) - set(_committee_elements(inputs["oracle"]["mace"]["mace"]))
    ):
        return f"prototypes contain {missing}, which the MACE committee does not know"
    return None


def _committee_elements(mace_inputs: dict[str, Any]) -> list[str]:
    elements = [set(model.elements) for model in mace_inputs["models"].values()]
    return sorted(set.intersection(*elements)) if elements else []


class DistillationWorkChain(ProtocolMixin, WorkChain):
    """Phase 1 (zero-shot distillation from the teacher), then Phase 4 (fine-tune the teacher on the DFT structures
    and delta-update ACE)."""

    _protocol_file = "distillation"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("campaign", valid_type=orm.Str, help="Campaign name: its history group holds every label.")
        spec.input("prototypes", valid_type=StructureSetData, help="Structures the candidates are made around.")
        spec.input("pool", valid_type=orm.Dict, validator=validate_pool, help="Candidate policies and seed.")
        spec.expose_inputs(TieredOracleWorkChain, namespace="oracle", exclude=ORACLE_SET_BY_LOOP)
        spec.expose_inputs(
            IncrementalTrainingWorkChain,
            namespace="training",
            exclude=TRAINING_SET_BY_LOOP,
        )
        spec.input("test_set", valid_type=LabelledStructuresData, required=False, help="Frozen held-out DFT set.")
        spec.input("dft_budget", valid_type=orm.Int, help="DFT calls allowed over the whole campaign.")
        spec.input("max_iterations", valid_type=orm.Int, default=lambda: orm.Int(3))
        spec.input("target_force_rmse", valid_type=orm.Float, required=False, help="Stop below this (meV/A).")
        spec.input(
            "max_test_force_rmse",
            valid_type=orm.Float,
            required=False,
            help="A final potential with a larger test force RMSE (meV/A) is unusable: exit 425 (outputs kept).",
        )
        spec.expose_inputs(
            MaceTrainBaseWorkChain,
            namespace="fine_tune",
            exclude=FINE_TUNE_SET_BY_LOOP,
            namespace_options={"required": False, "populate_defaults": False, "help": "Phase 4; off when absent."},
        )
        spec.input("fine_tune.surrogates", valid_type=orm.Dict, validator=validate_surrogates)
        spec.input(
            "fine_tune.committee_size",
            valid_type=orm.Int,
            default=lambda: orm.Int(0),
            help="With a single teacher model: fine-tune this many copies (seeds 0..n-1), a committee derived from "
            "it. 0 or 1: one fine-tuned model per teacher model.",
        )
        spec.input(
            "fine_tune.relabel",
            valid_type=orm.Bool,
            default=lambda: orm.Bool(True),
            help="Relabel the rows the old teacher labelled with the fine-tuned one before the delta update.",
        )
        spec.expose_inputs(
            AceMdBaseWorkChain,
            namespace="exploration",
            exclude=EXPLORATION_SET_BY_LOOP,
            namespace_options={"required": False, "populate_defaults": False, "help": "Phase 3; off when absent."},
        )
        spec.expose_inputs(
            ValidationWorkChain,
            namespace="validation",
            exclude=VALIDATION_SET_BY_LOOP,
            namespace_options={"required": False, "populate_defaults": False, "help": "Phase 2; off when absent."},
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            loop_while(cls.should_continue)(
                run_if(cls.should_fine_tune)(
                    cls.fine_tune_committee,
                    cls.calibrate_committee,
                    cls.inspect_calibration,
                    run_if(cls.should_relabel)(cls.relabel_teacher_rows, cls.inspect_relabelling),
                ),
                run_if(cls.should_explore)(cls.explore, cls.inspect_exploration).else_(cls.generate_structures),
                cls.label,
                cls.inspect_labels,
                run_if(cls.has_new_labels)(cls.fit, cls.inspect_fit),
            ),
            run_if(cls.should_validate)(cls.validate, cls.inspect_validation),
            cls.results,
        )
        spec.output("potential", valid_type=AcePotentialData, help="The final ACE potential.")
        spec.output("summary", valid_type=orm.Dict, help="Per iteration: routes, DFT calls, test RMSE, forgetting.")
        spec.output("energy_reference", valid_type=orm.Dict)
        spec.output("calibration", valid_type=orm.Dict, required=False, help="The teacher's last calibration.")
        spec.output_namespace("committee", valid_type=MaceModelData, dynamic=True, help="The fine-tuned committee.")
        spec.output("validation", valid_type=orm.Dict, required=False, help="Phase 2: the final potential's table.")
        spec.output("validation_curves", valid_type=orm.ArrayData, required=False, help="EOS and phonon curves.")
        spec.exit_code(420, "ERROR_ORACLE_FAILED", message="TieredOracleWorkChain<{pk}> failed: {message}")
        spec.exit_code(421, "ERROR_NOTHING_LABELLED", message="The first pool gave no labelled structure: {message}")
        spec.exit_code(422, "ERROR_TRAINING_FAILED", message="IncrementalTrainingWorkChain<{pk}> failed: {message}")
        spec.exit_code(423, "ERROR_FINE_TUNE_FAILED", message="MaceTrainBaseWorkChain<{pk}> failed: {message}")
        spec.exit_code(424, "ERROR_CALIBRATION_FAILED", message="MaceBaseWorkChain<{pk}> failed: {message}")
        spec.exit_code(426, "ERROR_RELABELLING_FAILED", message="MaceBaseWorkChain<{pk}> failed: {message}")
        spec.exit_code(427, "ERROR_EXPLORATION_FAILED", message="AceMdBaseWorkChain<{pk}> failed: {message}")
        spec.exit_code(428, "ERROR_VALIDATION_FAILED", message="ValidationWorkChain<{pk}> failed: {message}")
        spec.exit_code(
            425,
            "ERROR_POTENTIAL_UNUSABLE",
            message="The final potential's test force RMSE is {rmse:.1f} meV/A, above the bound of {bound} meV/A: "
            "it is kept in the outputs, but do not use it for MD.",
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        prototypes: StructureSetData,
        models: dict[str, MaceModelData],
        mace_code: orm.AbstractCode,
        pw_code: orm.AbstractCode,
        pacemaker_code: orm.AbstractCode,
        campaign: str,
        mace_train_code: orm.AbstractCode | None = None,
        md_code: orm.AbstractCode | None = None,
        evaluate_code: orm.AbstractCode | None = None,
        explore: bool = True,
        test_set: LabelledStructuresData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        **_,
    ):
        """A builder from ``protocols/distillation.yaml``; ``overrides`` mirror the ports, nested.

        The protocol is passed down: ``oracle`` (``TieredOracleWorkChain``, whose DFT tier follows it too),
        ``training`` (``IncrementalTrainingWorkChain``) and ``fine_tune`` (``MaceTrainBaseWorkChain``) are built
        from their own protocols of the same name with ``overrides['oracle']`` etc. on top. Phase 4 (fine-tuning) is
        on when ``mace_train_code`` is given, Phase 3 (exploration, ``AceMdBaseWorkChain``'s protocol with
        ``overrides['exploration']``) with ``md_code`` and ``explore``, Phase 2 (validation of the final potential,
        ``ValidationWorkChain``'s protocol with ``overrides['validation']``) with ``evaluate_code``. The largest
        prototype sets the DFT tier's cutoffs and bands.
        """
        name = protocol or cls.get_default_protocol()
        inputs = cls.get_protocol_inputs(protocol, overrides)
        largest = orm.StructureData(ase=max(prototypes.to_atoms(), key=len))
        oracle = nested_builder(
            "oracle",
            TieredOracleWorkChain.get_builder_from_protocol,
            mace_code,
            models,
            pw_code,
            largest,
            protocol=name,
            overrides=inputs.pop("oracle", None),
        )
        training = nested_builder(
            "training",
            IncrementalTrainingWorkChain.get_builder_from_protocol,
            pacemaker_code,
            protocol=name,
            overrides=inputs.pop("training", None),
        )
        exploration_overrides = inputs.pop("exploration", None)
        validation_overrides = inputs.pop("validation", None)
        fine_tune = inputs.pop("fine_tune", {})
        surrogates = fine_tune.pop("surrogates", None)
        fine_tune_loop_inputs = {key: fine_tune.pop(key) for key in ("committee_size", "relabel") if key in fine_tune}
        builder = cls.get_builder()
        for key, value in as_input_nodes(cls.spec().inputs, inputs).items():
            builder[key] = value
        builder.campaign = orm.Str(campaign)
        builder.prototypes = prototypes
        if test_set is not None:
            builder.test_set = test_set
        oracle_inputs = without(builder_inputs(oracle), *ORACLE_SET_BY_LOOP)
        if len(models) == 1:  # a single model's latent distance: to every prototype (the loop adds the DFT rows)
            oracle_inputs["mace"]["mace"]["reference_structures"] = prototypes
        builder.oracle = oracle_inputs
        builder.training = without(builder_inputs(training), *TRAINING_SET_BY_LOOP)
        if md_code is not None and explore:
            exploration = nested_builder(
                "exploration",
                AceMdBaseWorkChain.get_builder_from_protocol,
                md_code,
                protocol=name,
                overrides=exploration_overrides,
            )
            builder.exploration = builder_inputs(exploration)  # potential and start structures: set by the loop
        if evaluate_code is not None:
            validation = nested_builder(
                "validation",
                ValidationWorkChain.get_builder_from_protocol,
                evaluate_code,
                potential=None,
                prototype=None,
                md_code=md_code,
                protocol=name,
                overrides=validation_overrides,
            )
            builder.validation = without(builder_inputs(validation), *VALIDATION_SET_BY_LOOP)
        if mace_train_code is not None:
            member = next(iter(models.values()))  # any member: the builder picks the fine-tuning hyperparameters
            tune = nested_builder(
                "fine_tune",
                MaceTrainBaseWorkChain.get_builder_from_protocol,
                mace_train_code,
                foundation_model=member,
                protocol=name,
                overrides=fine_tune,
            )
            tune_inputs = builder_inputs(tune)
            tune_inputs["mace_train"] = without(
                tune_inputs["mace_train"], *(p.split(".")[1] for p in FINE_TUNE_SET_BY_LOOP)
            )
            namespace = cls.spec().inputs["fine_tune"]
            assert isinstance(namespace, PortNamespace)
            extra = as_input_nodes(namespace, fine_tune_loop_inputs)
            builder.fine_tune = {**tune_inputs, **extra, "surrogates": orm.Dict(surrogates or {})}
        return builder

    def setup(self):
        self.ctx.iteration = -1  # the index of the current iteration; -1 before the first
        self.ctx.fine_tuned = False
        self.ctx.dft_calls = 0
        self.ctx.committee = dict(self.inputs.oracle.mace.mace.models)
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
        # A spent budget still leaves one fine-tuning pass on the DFT structures of the last iteration; with
        # exploration the teacher still labels the frames where ACE extrapolates (max_iterations bounds the loop).
        unused_dft = "fine_tune" in self.inputs and "dft_last" in self.ctx
        if self.ctx.dft_calls >= self.inputs.dft_budget.value and not unused_dft and "exploration" not in self.inputs:
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
        """One ``MaceTrainBaseWorkChain`` per new member, each from its own teacher model (members stay different);
        a single teacher with ``committee_size`` >= 2 gives that many copies with different seeds."""
        inputs = self.exposed_inputs(MaceTrainBaseWorkChain, namespace="fine_tune")
        parameters = inputs["mace_train"]["parameters"].get_dict()
        rows = training_rows(len(self.ctx.dft_set), parameters.get("valid_fraction"))
        if int(parameters.get("batch_size", 10)) > rows:  # a few DFT structures: smaller batches, not a failure
            parameters["batch_size"] = rows
            self.report(f"fine-tuning batch_size lowered to {rows}: only {rows} training structures")
        self.ctx.fine_tune_plan = self.fine_tune_plan()
        futures = {}
        for key, (source, seed) in sorted(self.ctx.fine_tune_plan.items()):
            member = {
                **inputs["mace_train"],
                "parameters": orm.Dict(parameters),
                "training_set": self.ctx.dft_set,
                "foundation_model": self.ctx.committee[source],
                "seeds": orm.List([seed]),
            }
            futures[f"fine_tune_{key}"] = self.submit(MaceTrainBaseWorkChain, **{**inputs, "mace_train": member})
        self.report(f"Phase 4: fine-tuning {len(futures)} teacher models on {len(self.ctx.dft_set)} DFT structures")
        return ToContext(**futures)

    def fine_tune_plan(self) -> dict[str, tuple[str, int]]:
        """New member key -> (teacher member it starts from, seed)."""
        size = self.inputs.fine_tune.committee_size.value
        members = sorted(self.ctx.committee)
        if len(members) == 1 and size >= 2:
            return {f"m{seed}": (members[0], seed) for seed in range(size)}
        return {key: (key, index) for index, key in enumerate(members)}

    def calibrate_committee(self):
        """The fine-tuned teacher on the DFT structures: its energy reference comes from these results."""
        committee = {}
        for key, (_, seed) in sorted(self.ctx.fine_tune_plan.items()):
            node = self.ctx[f"fine_tune_{key}"]
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_FINE_TUNE_FAILED.format(pk=node.pk, message=node.exit_message or "")
            committee[key] = node.outputs.models[f"s{seed}"]
        self.ctx.previous_committee = self.ctx.committee
        self.ctx.previous_fine_tuned = self.ctx.fine_tuned
        if "energy_reference" in self.ctx:
            self.ctx.previous_energy_reference = self.ctx.energy_reference
        self.ctx.committee = committee
        self.ctx.fine_tuned = True
        inputs = self._teacher_inputs()
        inputs["mace"]["structure_set"] = self.ctx.dft_set
        return ToContext(calibration=self.submit(MaceBaseWorkChain, **inputs))

    def inspect_calibration(self):
        node = self.ctx.calibration
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_CALIBRATION_FAILED.format(pk=node.pk, message=node.exit_message or "")
        self.ctx.energy_reference = fit_reference(self.ctx.dft_set, node.outputs.results)
        self.report(f"fine-tuned teacher: energy shift {self.ctx.energy_reference['shift_per_atom']} eV/atom")
        return None

    def should_relabel(self) -> bool:
        if not self.inputs.fine_tune.relabel.value:
            return False
        selected = select_source(orm.Str("mace"), **self.ctx.labelled)
        if "selected" not in selected:
            return False
        self.ctx.teacher_rows = selected["selected"]
        return True

    def relabel_teacher_rows(self):
        """The fine-tuned teacher on every row the old teacher labelled."""
        inputs = self._teacher_inputs()
        inputs["mace"]["structure_set"] = self.ctx.teacher_rows
        self.report(f"Phase 4: relabelling {len(self.ctx.teacher_rows)} teacher-labelled rows with the fine-tuned one")
        return ToContext(relabelling=self.submit(MaceBaseWorkChain, **inputs))

    def inspect_relabelling(self):
        node = self.ctx.relabelling
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_RELABELLING_FAILED.format(pk=node.pk, message=node.exit_message or "")
        outputs = relabel(self.ctx.teacher_rows, node.outputs.results, self.ctx.energy_reference)
        relabelled = len(outputs["relabelled"]) if "relabelled" in outputs else 0
        rows = len(self.ctx.teacher_rows)
        if relabelled < MIN_RELABELLED_SHARE * rows:
            # Most old labels moved beyond their calibrated error: the fine-tuned teacher drifted (a few DFT
            # structures cannot justify that); the old teacher labels on, its labels stay.
            self.ctx.committee = self.ctx.previous_committee
            self.ctx.fine_tuned = self.ctx.previous_fine_tuned
            if "previous_energy_reference" in self.ctx:
                self.ctx.energy_reference = self.ctx.previous_energy_reference
            self.report(
                f"Phase 4: the fine-tuned teacher changed {rows - relabelled} of {rows} old labels beyond their "
                "calibrated error: it drifted, it is not used; the previous teacher labels this iteration"
            )
            return None
        self.ctx.relabelled = outputs["relabelled"]
        self.report(f"Phase 4: {relabelled} of {rows} teacher rows relabelled by the fine-tuned teacher")
        return None

    def should_explore(self) -> bool:
        """Phase 3 from the second iteration on, once an ACE potential exists."""
        return "exploration" in self.inputs and "potential" in self.ctx

    def explore(self):
        """MD with the current ACE from the prototypes: the frames where it extrapolates are the candidates."""
        self.ctx.iteration += 1
        inputs = self.exposed_inputs(AceMdBaseWorkChain, namespace="exploration")
        parameters = inputs["md"]["parameters"].get_dict() if "parameters" in inputs["md"] else {}
        parameters["seed"] = int(parameters.get("seed", 0)) + self.ctx.iteration  # new trajectories every iteration
        inputs["md"] = {
            **inputs["md"],
            "parameters": orm.Dict(parameters),
            "potential": self.ctx.potential,
            "structure_set": self.inputs.prototypes,
        }
        self.report(f"iteration {self.ctx.iteration}: Phase 3: exploring with ACE potential {self.ctx.potential.pk}")
        return ToContext(exploration=self.submit(AceMdBaseWorkChain, **inputs))

    def inspect_exploration(self):
        node = self.ctx.exploration
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_EXPLORATION_FAILED.format(pk=node.pk, message=node.exit_message or "")
        summary = node.outputs.summary
        records = summary["trajectories"]
        stops = {record["stop_reason"] for record in records}
        largest = max(record["max_gamma"] for record in records)
        self.ctx.records[f"exploration_{self.ctx.iteration:03d}"] = summary
        if "selected" not in node.outputs:
            self.report(f"exploration: no frame above gamma_select (largest gamma {largest:.2f}); other candidates")
            self.make_candidates()
            return None
        self.ctx.candidates = node.outputs.selected
        self.report(
            f"iteration {self.ctx.iteration}: {len(self.ctx.candidates)} frames selected by D-optimality of "
            f"{summary['frames_collected']} collected (largest gamma {largest:.2f}; stops: {sorted(stops)})"
        )
        return None

    def generate_structures(self):
        self.ctx.iteration += 1
        self.make_candidates()

    def make_candidates(self) -> None:
        """The pool (iteration 0, or every iteration without fine-tuning) or surrogates around the DFT structures."""
        seed = orm.Int(self.inputs.pool.get("seed", 0) + self.ctx.iteration)
        if self.ctx.iteration > 0 and "fine_tune" in self.inputs and "dft_last" in self.ctx:
            self.ctx.candidates = generate_candidates(self.ctx.dft_last, self.inputs.fine_tune.surrogates, seed)
            kind = "Phase 4: surrogates around the last DFT structures"
        else:
            policies = orm.Dict(self.inputs.pool["policies"])
            self.ctx.candidates = generate_candidates(self.inputs.prototypes, policies, seed)
            kind = "Phase 1: candidate pool" if self.ctx.iteration == 0 else "a fresh candidate pool"
        self.report(f"iteration {self.ctx.iteration}: {len(self.ctx.candidates)} structures ({kind})")

    def label(self):
        inputs = self.exposed_inputs(TieredOracleWorkChain, namespace="oracle")
        inputs["mace"] = self._teacher_inputs()
        if "uncertainty_calibration" in self.ctx:
            inputs["calibration"] = self.ctx.uncertainty_calibration
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
        if "calibration" in node.outputs:
            self.ctx.uncertainty_calibration = node.outputs.calibration
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
        new = self.ctx.labelled[f"iteration_{self.ctx.iteration:03d}"]
        if "relabelled" in self.ctx:  # Phase 4: the old teacher's rows with the fine-tuned teacher's labels
            new = merge_labelled(new=new, relabelled=self.ctx.pop("relabelled"))
        inputs.update(campaign=self.inputs.campaign, new_structures=new)
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
            overall = forgetting["overall"]
            message += f" (median structure {overall['median_structure_f_mev_per_a']:.1f}, worst "
            message += f"{overall['worst_structure_f_mev_per_a']:.1f}: test row {overall['worst_structure']})"
            if "max_gamma" in overall:
                flagged = overall["extrapolating_structures"]
                message += f"; largest gamma {overall['max_gamma']:.2f}, {len(flagged)} extrapolating test rows"
            if "force_rmse_ratio" in forgetting:
                ratios = {domain: round(value, 3) for domain, value in forgetting["force_rmse_ratio"].items()}
                message += f"; forgetting (after/before) {ratios}"
        self.report(message)
        return None

    def should_validate(self) -> bool:
        return "validation" in self.inputs

    def validate(self):
        """Phase 2: the final potential against the teacher and DFT, on the first prototype."""
        inputs = self.exposed_inputs(ValidationWorkChain, namespace="validation")
        prototype = orm.StructureData(ase=self.inputs.prototypes.to_atoms()[0])
        inputs.update(potential=self.ctx.potential, prototype=prototype)
        if len(self.ctx.committee) == 1:
            inputs["teacher"] = next(iter(self.ctx.committee.values()))
        if "dft" in self.inputs.oracle:
            inputs["dft"] = self.exposed_inputs(TieredOracleWorkChain, namespace="oracle")["dft"]
        self.report(f"Phase 2: validating potential {self.ctx.potential.pk} on {prototype.get_formula()}")
        return ToContext(validation=self.submit(ValidationWorkChain, **inputs))

    def inspect_validation(self):
        node = self.ctx.validation
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_VALIDATION_FAILED.format(pk=node.pk, message=node.exit_message or "")
        self.out("validation", node.outputs.table)
        self.out("validation_curves", node.outputs.curves)
        return None

    def results(self):
        settings = {
            "iterations": self.ctx.iteration + 1,
            "dft_budget": self.inputs.dft_budget.value,
            "stop_reason": self.ctx.stop_reason or "",
        }
        summary = summarise_campaign(orm.Dict(settings), **self.ctx.records)
        self.out("summary", summary)
        self.out("potential", self.ctx.potential)
        self.out("energy_reference", self.ctx.energy_reference)
        if "uncertainty_calibration" in self.ctx:
            self.out("calibration", self.ctx.uncertainty_calibration)
        if self.ctx.fine_tuned:
            self.out("committee", self.ctx.committee)
        self.report(
            f"done: {summary['dft_calls']} DFT calls, {settings['iterations']} iterations, potential pk "
            f"{self.ctx.potential.pk}"
        )
        return self.check_potential_usable()

    def check_potential_usable(self):
        """Loud failure: a final potential whose test force RMSE is above ``max_test_force_rmse`` (outputs kept)."""
        rmse = self.ctx.get("test_force_rmse")
        if "max_test_force_rmse" in self.inputs and rmse is not None and rmse > self.inputs.max_test_force_rmse.value:
            return self.exit_codes.ERROR_POTENTIAL_UNUSABLE.format(
                rmse=rmse, bound=self.inputs.max_test_force_rmse.value
            )
        return None

    def _teacher_inputs(self) -> dict[str, Any]:
        """The oracle's ``MaceBaseWorkChain`` inputs with the current teacher and its reference structures: the given
        ones (by default the prototypes) and, for a teacher fine-tuned on them, the campaign's DFT structures (the
        latent distance is measured to them)."""
        inputs = self.exposed_inputs(TieredOracleWorkChain, namespace="oracle")["mace"]
        mace = {**inputs["mace"], "models": self.ctx.committee}
        # The DFT structures belong to the reference only once the teacher was trained on them (fine-tuned): the
        # latent distance says where the teacher is reliable, not where DFT labels exist.
        trained_on_dft = self.ctx.fine_tuned and self.ctx.labelled
        dft = select_source(orm.Str("dft"), **self.ctx.labelled) if trained_on_dft else {}
        key = f"reference_{len(dft['selected']) if 'selected' in dft else 0}"
        if key not in self.ctx:  # one node per size of the DFT set, not one per call
            self.ctx[key] = teacher_reference(mace.get("reference_structures", self.inputs.prototypes), **dft)
        mace["reference_structures"] = self.ctx[key]
        return {**inputs, "mace": mace}
