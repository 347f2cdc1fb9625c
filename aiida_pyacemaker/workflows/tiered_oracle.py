"""``TieredOracleWorkChain``: label structures with the teacher (MACE) first, and with DFT only where it is unsure.

The teacher is a committee (its spread is the uncertainty) or a single model (the latent distance of its atoms to
``mace.mace.reference_structures``). The thresholds apply to the calibrated uncertainty, an estimate of the teacher's
true largest atomic force error (eV/A, ``aiida_pyacemaker.calibration``): the ``calibration`` input, or, without
one, a calibration fitted first on ``calibration_size`` rows that DFT labels, spread over the raw uncertainty's
range. Every oracle outputs its calibration refitted with all its DFT rows. The routing decision is made once, by the
``route_structures`` calcfunction; every DFT calculation descends from it (or from the calibration selection).
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_, while_
from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

from ..calculations.functions.oracle import (
    DFT_ROW_PREFIX,
    UNLABELLED_OUTPUTS,
    assemble_labels,
    calibrate_teacher,
    route_structures,
    row_record,
    select_calibration_rows,
    split_structure_set,
)
from ..data.labelled_structures import LabelledStructuresData
from ..data.mace_model import MaceModelData
from ..data.structure_set import StructureSetData
from ..dft import dft_overrides
from ..protocols import (
    QE_PROTOCOLS,
    ProtocolMixin,
    as_input_nodes,
    builder_inputs,
    nested_builder,
    recursive_merge,
)
from ..routing import MIDDLE_BAND_POLICIES, validate_thresholds
from .mace.base import MaceBaseWorkChain

# aiida's annotations accept only ``WorkChain`` methods in conditionals, not a subclass's: untyped aliases.
loop_while: Any = while_
run_if: Any = if_


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    budget = inputs["max_dft_calls"].value if "max_dft_calls" in inputs else None
    message = validate_thresholds(
        inputs["uncertainty_threshold"].value,
        inputs["threshold_call_dft"].value,
        inputs["middle_band_policy"].value,
        budget,
    )
    if message:
        return message
    if "calibration_size" in inputs and inputs["calibration_size"].value < 0:
        return f"calibration_size must be >= 0, got {inputs['calibration_size'].value}"
    share = inputs.get("max_dft_failure_share")
    if share is not None and not 0 <= share.value <= 1:
        return f"max_dft_failure_share must be in [0, 1], got {share.value}"
    if "dft" not in inputs and budget != 0:
        return "give the DFT tier inputs (`dft` namespace), or set max_dft_calls=0 to label with MACE only"
    return None


class TieredOracleWorkChain(ProtocolMixin, WorkChain):
    """Teacher first; DFT (``PwBaseWorkChain``) only above the uncertainty threshold. Every decision is kept."""

    _protocol_file = "tiered_oracle"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structures", valid_type=StructureSetData, help="The candidates, any number.")
        spec.expose_inputs(MaceBaseWorkChain, namespace="mace", exclude=("mace.structures", "mace.structure_set"))
        spec.input("mace_batch_size", valid_type=orm.Int, default=lambda: orm.Int(2000), help="Structures per job.")
        spec.expose_inputs(
            PwBaseWorkChain,
            namespace="dft",
            exclude=("pw.structure",),
            namespace_options={"required": False, "populate_defaults": False},
        )
        spec.input("uncertainty_threshold", valid_type=orm.Float, help="Accept the MACE label when u <= this (eV/A).")
        spec.input("threshold_call_dft", valid_type=orm.Float, help="Send to DFT when u > this (eV/A).")
        spec.input(
            "middle_band_policy",
            valid_type=orm.Str,
            default=lambda: orm.Str("discard"),
            help=f"For accept < u <= dft: one of {MIDDLE_BAND_POLICIES}.",
        )
        spec.input("max_dft_calls", valid_type=orm.Int, required=False, help="DFT budget; most uncertain first.")
        spec.input("max_concurrent_dft", valid_type=orm.Int, default=lambda: orm.Int(4))
        spec.input("energy_reference", valid_type=orm.Dict, required=False, help="Last known shift, if no DFT runs.")
        spec.input(
            "max_dft_failure_share",
            valid_type=orm.Float,
            default=lambda: orm.Float(0.5),
            help="Fail (exit 402) when more than this share of the DFT rows fail; always when every one fails.",
        )
        spec.input(
            "calibration",
            valid_type=orm.Dict,
            required=False,
            help="Maps the teacher's raw uncertainty to its expected largest force error (eV/A); refitted and output.",
        )
        spec.input(
            "calibration_size",
            valid_type=orm.Int,
            default=lambda: orm.Int(0),
            help="Without a `calibration` (or with one of another kind of uncertainty): DFT labels this many rows "
            "first, spread over the uncertainty's range, to fit one (they count against the budget). 0: thresholds "
            "apply to the raw uncertainty.",
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.run_teacher,
            cls.inspect_teacher,
            run_if(cls.should_calibrate)(
                cls.select_calibration_rows,
                loop_while(cls.dft_pending)(cls.run_dft_batch, cls.inspect_dft_batch),
                cls.calibrate,
            ),
            cls.route,
            loop_while(cls.dft_pending)(cls.run_dft_batch, cls.inspect_dft_batch),
            cls.assemble,
        )
        spec.output("labelled", valid_type=LabelledStructuresData, required=False)
        spec.output("routing", valid_type=orm.ArrayData, help="route, uncertainty and status of every input row")
        spec.output("energy_reference", valid_type=orm.Dict)
        spec.output("calibration", valid_type=orm.Dict, required=False, help="Refitted with this oracle's DFT rows.")
        for name in UNLABELLED_OUTPUTS:
            spec.output(name, valid_type=StructureSetData, required=False)
        spec.exit_code(401, "ERROR_MACE_FAILED", message="The teacher failed: {message}")
        spec.exit_code(
            402,
            "ERROR_DFT_FAILED",
            message="DFT failed for {failed} of the {sent} structures sent to it (tolerated share {share}); "
            "the labels that exist are in the outputs. First failure: {first}",
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        mace_code: orm.AbstractCode,
        models: dict[str, MaceModelData],
        pw_code: orm.AbstractCode | None = None,
        structure: orm.StructureData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        **_,
    ):
        """A builder from ``protocols/tiered_oracle.yaml``.

        The teacher's inputs come from ``MaceBaseWorkChain``'s protocol (``overrides['mace']``). With ``pw_code``
        the DFT tier comes from ``PwBaseWorkChain``'s protocol of the same intent (``QE_PROTOCOLS``), set up for
        ``structure`` (the largest structure you expect: it fixes cutoffs and bands), ``overrides['dft']`` on top.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        meta = inputs.pop("meta_parameters", {})
        name = protocol or cls.get_default_protocol()
        teacher = nested_builder(
            "mace",
            MaceBaseWorkChain.get_builder_from_protocol,
            mace_code,
            models,
            protocol=name,
            overrides=inputs.pop("mace", None),
        )
        dft_inputs = inputs.pop("dft", {})
        builder = cls.get_builder()
        for key, value in as_input_nodes(cls.spec().inputs, inputs).items():
            builder[key] = value
        teacher_inputs = builder_inputs(teacher)
        if len(models) == 1 and structure is not None and "reference_structures" not in teacher_inputs["mace"]:
            # a single model's uncertainty is its latent distance: to the representative structure by default
            teacher_inputs["mace"]["reference_structures"] = StructureSetData.from_atoms([structure.get_ase()])
        builder.mace = teacher_inputs
        if pw_code is not None:
            if structure is None:
                raise ValueError("give a representative `structure` to set up the DFT tier")
            family = dft_inputs.pop("pseudo_family", meta.get("pseudo_family"))
            defaults = dft_overrides(structure, family, meta.get("dft_cutoff_stringency"))
            if pw_code.with_mpi is not None:
                defaults["pw"]["metadata"] = {"options": {"withmpi": pw_code.with_mpi}}
            dft = PwBaseWorkChain.get_builder_from_protocol(
                pw_code, structure, protocol=QE_PROTOCOLS[name], overrides=recursive_merge(defaults, dft_inputs)
            )
            dft_dict = builder_inputs(dft)
            dft_dict["pw"].pop("structure")
            builder.dft = dft_dict
        return builder

    def run_teacher(self):
        """One ``MaceBaseWorkChain`` per chunk of ``mace_batch_size`` structures."""
        structures = self.inputs.structures
        if len(structures) <= self.inputs.mace_batch_size.value:
            chunks = {"chunk_00000": structures}
        else:
            chunks = split_structure_set(structures, self.inputs.mace_batch_size)
        inputs = self.exposed_inputs(MaceBaseWorkChain, namespace="mace")
        for key, chunk in sorted(chunks.items()):
            chunk_inputs = {**inputs, "mace": {**inputs["mace"], "structure_set": chunk}}
            self.to_context(**{f"mace_{key}": self.submit(MaceBaseWorkChain, **chunk_inputs)})

    def inspect_teacher(self):
        """Every teacher job must have finished; keep the calibration that applies to its kind of uncertainty."""
        for key in self.mace_keys():
            node = self.ctx[key]
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_MACE_FAILED.format(
                    message=f"{node.process_label}<{node.pk}> [{node.exit_status}] {node.exit_message or ''}"
                )
        self.ctx.dft_structures = {}
        self.ctx.dft_queue = []
        self.ctx.dft_done = []
        kind = self.ctx[self.mace_keys()[0]].outputs.results.uncertainty_kind
        if "calibration" in self.inputs:
            given = self.inputs.calibration.get("uncertainty_kind")
            if given == kind:
                self.ctx.calibration = self.inputs.calibration
            else:
                self.report(f"the given calibration is for a `{given}` uncertainty, the teacher's is `{kind}`: ignored")
        return None

    def should_calibrate(self) -> bool:
        """No calibration for this teacher yet, rows to spare for one, and a DFT tier."""
        budget = self.inputs.max_dft_calls.value if "max_dft_calls" in self.inputs else None
        return (
            "calibration" not in self.ctx
            and self.inputs.calibration_size.value > 0
            and "dft" in self.inputs
            and budget != 0
        )

    def select_calibration_rows(self):
        """DFT labels a few rows spread over the raw uncertainty's range first."""
        count = self.inputs.calibration_size.value
        if "max_dft_calls" in self.inputs:
            count = min(count, self.inputs.max_dft_calls.value)
        selection = select_calibration_rows(self.inputs.structures, orm.Int(count), **self.teacher_results())
        self.ctx.calibration_rows = selection["calibration_rows"]
        self.queue_dft(selection)
        self.report(f"calibration: DFT labels {len(self.ctx.dft_queue)} rows spread over the uncertainty's range")

    def calibrate(self):
        """Fit the calibration on the rows DFT labelled so far."""
        if not self.ctx.dft_done:
            self.report("calibration: no DFT row succeeded; the thresholds apply to the raw uncertainty")
            return
        self.ctx.calibration = calibrate_teacher(**self.teacher_results(), **self.dft_trajectories())
        content = self.ctx.calibration.get_dict()
        self.report(
            f"calibration on {content['points']} DFT rows: error = {content['prefactor']:.3g} * u^"
            f"{content['exponent']:.3g} eV/A (Spearman {content['spearman']})"
        )

    def route(self):
        """Record the routing decision once; queue the rows it sends to DFT."""
        nodes = self.teacher_results()
        if "calibration" in self.ctx:
            nodes["calibration"] = self.ctx.calibration
        if "calibration_rows" in self.ctx:
            nodes["calibration_rows"] = self.ctx.calibration_rows
        decision = route_structures(self.inputs.structures, orm.Dict(self.routing_settings()), **nodes)
        self.ctx.routing = decision["routing"]
        self.report(f"routes after the MACE tier: {self.ctx.routing.base.attributes.get('counts')}")
        self.queue_dft(decision)

    def queue_dft(self, outputs: dict[str, Any]) -> None:
        """Queue the ``dft_row_<row>`` structures of a decision for DFT."""
        for label, structure in outputs.items():
            if label.startswith(DFT_ROW_PREFIX):
                row = int(label[len(DFT_ROW_PREFIX) :])
                # queryable: "structures sent to DFT with (raw) u > x"
                raw = row_record(list(self.teacher_results().values()), row)["uncertainty"]
                structure.base.extras.set_many({"pyacemaker_uncertainty": raw, "pyacemaker_row": row})
                self.ctx.dft_structures[row] = structure
                self.ctx.dft_queue.append(row)
        self.ctx.dft_queue = sorted(self.ctx.dft_queue)

    def teacher_results(self) -> dict[str, Any]:
        return {key: self.ctx[key].outputs.results for key in self.mace_keys()}

    def dft_trajectories(self) -> dict[str, Any]:
        return {
            f"dft_trajectory_{row:06d}": self.ctx[f"dft_{row:06d}"].outputs.output_trajectory
            for row in self.ctx.dft_done
        }

    def dft_pending(self) -> bool:
        return bool(self.ctx.dft_queue)

    def run_dft_batch(self):
        """Submit up to ``max_concurrent_dft`` ``PwBaseWorkChain``."""
        batch = self.ctx.dft_queue[: self.inputs.max_concurrent_dft.value]
        self.ctx.dft_queue = self.ctx.dft_queue[len(batch) :]
        inputs = self.exposed_inputs(PwBaseWorkChain, namespace="dft")
        futures = {}
        for row in batch:
            row_inputs = {**inputs, "pw": {**inputs["pw"], "structure": self.ctx.dft_structures[row]}}
            futures[f"dft_{row:06d}"] = self.submit(PwBaseWorkChain, **row_inputs)
        self.ctx.dft_batch = batch
        return ToContext(**futures)

    def inspect_dft_batch(self):
        for row in self.ctx.dft_batch:
            node = self.ctx[f"dft_{row:06d}"]
            if node.is_finished_ok:
                self.ctx.dft_done.append(row)
            else:
                self.report(f"DFT of row {row} failed ({node.process_label}<{node.pk}>): recorded as dft_failed")

    def assemble(self):
        nodes: dict[str, Any] = {**self.teacher_results(), **self.dft_trajectories()}
        for row in self.ctx.dft_done:
            nodes[f"dft_parameters_{row:06d}"] = self.ctx[f"dft_{row:06d}"].outputs.output_parameters
        if "energy_reference" in self.inputs:
            nodes["energy_reference"] = self.inputs.energy_reference
        outputs = assemble_labels(self.inputs.structures, self.ctx.routing, **nodes)
        for name, node in outputs.items():
            self.out(name, node)
        self.output_calibration()
        self.report(
            f"routes: {outputs['routing'].base.attributes.get('counts')}; "
            f"energy shift: {outputs['energy_reference']['shift_per_atom']}"
        )
        return self.check_dft_failures()

    def output_calibration(self) -> None:
        """The calibration refitted with every DFT row of this oracle (or the one given, when none ran)."""
        previous = {"previous": self.inputs.calibration} if "calibration" in self.inputs else {}
        if self.ctx.dft_done:
            self.out("calibration", calibrate_teacher(**self.teacher_results(), **self.dft_trajectories(), **previous))
        elif "calibration" in self.ctx:
            self.out("calibration", self.ctx.calibration)

    def check_dft_failures(self):
        """Loud failure: a broken DFT tier (every row failed, or more than the tolerated share) fails the oracle."""
        sent = sorted(self.ctx.dft_structures)
        failed = [row for row in sent if row not in self.ctx.dft_done]
        share = self.inputs.max_dft_failure_share.value
        if not failed or (len(failed) < len(sent) and len(failed) / len(sent) <= share):
            return None
        node = self.ctx[f"dft_{failed[0]:06d}"]
        first = f"row {failed[0]}: {node.process_label}<{node.pk}> [{node.exit_status}] {node.exit_message or ''}"
        return self.exit_codes.ERROR_DFT_FAILED.format(failed=len(failed), sent=len(sent), share=share, first=first)

    def routing_settings(self) -> dict[str, Any]:
        """The thresholds, policy and budget, as ``route_with_settings`` reads them."""
        settings = {
            "accept": self.inputs.uncertainty_threshold.value,
            "call_dft": self.inputs.threshold_call_dft.value,
            "policy": self.inputs.middle_band_policy.value,
        }
        if "max_dft_calls" in self.inputs:
            settings["max_dft_calls"] = self.inputs.max_dft_calls.value
        return settings

    def mace_keys(self) -> list[str]:
        return sorted(key for key in self.ctx if key.startswith("mace_chunk_"))
