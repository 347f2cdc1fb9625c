"""``IncrementalTrainingWorkChain``: append to the campaign history, sample a replay set, refit ACE warm-started."""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_

from ..calculations.functions.training import build_training_set, measure_forgetting, select_new_rows
from ..data.ace_potential import AcePotentialData
from ..data.history import get_history, history_batches
from ..data.labelled_structures import LabelledStructuresData
from ..protocols import ProtocolMixin, as_input_nodes, builder_inputs
from ..replay import STRATEGIES
from .pacemaker.base import PacemakerBaseWorkChain


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


class IncrementalTrainingWorkChain(ProtocolMixin, WorkChain):
    """History in a group, bounded seeded replay, warm-started ACE refit, forgetting measured on a frozen test set."""

    _protocol_file = "incremental_training"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("campaign", valid_type=orm.Str, help="Campaign name: its history is a group in the graph.")
        spec.input("new_structures", valid_type=LabelledStructuresData)
        spec.expose_inputs(
            PacemakerBaseWorkChain,
            namespace="pacemaker",
            exclude=("pacemaker.training_set", "pacemaker.previous_potential", "pacemaker.test_set"),
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
        spec.exit_code(410, "ERROR_FIT_FAILED", message="PacemakerBaseWorkChain<{pk}> failed: {message}")

    @classmethod
    def get_builder_from_protocol(
        cls,
        pacemaker_code: orm.AbstractCode,
        campaign: str | None = None,
        new_structures: LabelledStructuresData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        **_,
    ):
        """A builder from ``protocols/incremental_training.yaml``; the fit's inputs come from
        ``PacemakerBaseWorkChain``'s protocol of the same name (``overrides['pacemaker']`` on top)."""
        inputs = cls.get_protocol_inputs(protocol, overrides)
        fit = PacemakerBaseWorkChain.get_builder_from_protocol(
            pacemaker_code, protocol=protocol or cls.get_default_protocol(), overrides=inputs.pop("pacemaker", None)
        )
        builder = cls.get_builder()
        for key, value in as_input_nodes(cls.spec().inputs, inputs).items():
            builder[key] = value
        builder.pacemaker = builder_inputs(fit)
        if campaign is not None:
            builder.campaign = orm.Str(campaign)
        if new_structures is not None:
            builder.new_structures = new_structures
        return builder

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
        inputs = self.exposed_inputs(PacemakerBaseWorkChain, namespace="pacemaker")
        fit = {**inputs["pacemaker"], "training_set": self.ctx.training_set}
        if "test_set" in self.inputs:
            fit["test_set"] = self.inputs.test_set
        if self.inputs.incremental_update.value and "previous_potential" in self.inputs:
            fit["previous_potential"] = self.inputs.previous_potential
            self.report("warm start from the previous potential")
        else:
            self.report("fit from scratch")
        return ToContext(fit=self.submit(PacemakerBaseWorkChain, **{**inputs, "pacemaker": fit}))

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
