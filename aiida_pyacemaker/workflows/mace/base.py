"""``MaceBaseWorkChain``: runs a ``MaceCalculation`` and restarts it on the failures a restart can fix.

Handlers (highest priority first):

* ``handle_model_unreadable`` (310) and ``handle_input_unreadable`` (311): a broken model file or structures file
  fails again on every restart, so the wrapper aborts at once with its own exit code and the child's message;
* ``handle_out_of_memory`` (410, or the scheduler's 110): halves ``parameters.batch_size`` and
  ``parameters.max_batch_atoms`` (not below 1) and restarts; when a batch already holds one structure
  (``batch_size`` or ``max_batch_atoms`` at 1) nothing smaller exists and it aborts with
  ``ERROR_OUT_OF_MEMORY_SINGLE_STRUCTURE``;
* ``handle_out_of_walltime`` (400, or the scheduler's 120): the committee script writes its results only at the end
  (no checkpoint to continue from), so the job is rerun from scratch with doubled
  ``metadata.options.max_wallclock_seconds``; ``max_iterations`` bounds the growth.

Any other failure (no results file, a corrupt one) is left to ``BaseRestartWorkChain``'s ``on_unhandled_failure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import CalcJob, ProcessHandlerReport, process_handler
from aiida.engine.processes.builder import ProcessBuilder

from ...calculations.mace import DEFAULT_PARAMETERS, MaceCalculation
from ...data.mace_model import MaceModelData
from ...data.structure_set import StructureSetData
from ..restart import RestartWrapper

__all__ = ("MaceBaseWorkChain",)


class MaceBaseWorkChain(RestartWrapper):
    """Evaluate structures with a MACE committee (``MaceCalculation``), restarting on memory and walltime failures."""

    _process_class = MaceCalculation
    _protocol_file = "mace/base"
    _namespace = "mace"

    #: How the handlers change the inputs.
    defaults = AttributeDict(
        {
            "batch_reduction_factor": 2,  # out of memory: batch_size and max_batch_atoms are divided by this
            "walltime_factor": 2,  # out of walltime: max_wallclock_seconds is multiplied by this
            "fallback_max_wallclock_seconds": 3600,  # out of walltime with no walltime known: start from this
        }
    )

    @classmethod
    def define(cls, spec) -> None:
        """Expose ``MaceCalculation``'s inputs in ``mace`` and its outputs at the top level."""
        super().define(spec)
        spec.exit_code(
            310,
            "ERROR_MODEL_UNREADABLE",
            message="A model file of the committee cannot be loaded; a restart cannot help: {message}",
        )
        spec.exit_code(
            311,
            "ERROR_INPUT_UNREADABLE",
            message="The structures file cannot be read; a restart cannot help: {message}",
        )
        spec.exit_code(
            320,
            "ERROR_OUT_OF_MEMORY_SINGLE_STRUCTURE",
            message="Out of memory with one structure per batch (batch_size {batch_size}, max_batch_atoms "
            "{max_batch_atoms}): give the job more memory or evaluate the largest structures elsewhere.",
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode | str,
        models: Mapping[str, MaceModelData],
        structure_set: StructureSetData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """A builder filled from ``protocols/mace/base.yaml``.

        :param code: the code (or its label) that runs the committee script with mace-torch.
        :param models: the committee, ``{key: MaceModelData}``.
        :param structure_set: the structures; leave it out when a parent sets ``mace.structure_set`` (or
            ``mace.structures``) itself, e.g. per chunk.
        :param protocol: ``fast``, ``balanced`` or ``stringent`` (default: the file's ``default_protocol``).
        :param overrides: nested inputs merged over the protocol's, in the layout of this work chain's ports.
        :param options: merged over ``mace.metadata.options``.
        :raises ProtocolError: for an unknown protocol or a key that is no input.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        return cls.builder_from_protocol_inputs(inputs, code, options, models=dict(models), structure_set=structure_set)

    def setup(self) -> None:
        """``ctx.inputs`` from the ``mace`` namespace; ``parameters`` as a plain dict with every default filled in."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(MaceCalculation, "mace"))
        given = self.ctx.inputs.parameters.get_dict() if "parameters" in self.ctx.inputs else {}
        self.ctx.inputs.parameters = {**DEFAULT_PARAMETERS, **given}
        self.ctx.inputs.metadata = AttributeDict(self.ctx.inputs.get("metadata", {}))
        self.ctx.inputs.metadata.options = AttributeDict(self.ctx.inputs.metadata.get("options", {}))

    @process_handler(priority=600, exit_codes=[MaceCalculation.exit_codes.ERROR_MODEL_UNREADABLE])
    def handle_model_unreadable(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """A model file the committee cannot load fails again on restart: abort."""
        return self.abort(node, "ERROR_MODEL_UNREADABLE", "a model file is unreadable")

    @process_handler(priority=590, exit_codes=[MaceCalculation.exit_codes.ERROR_INPUT_UNREADABLE])
    def handle_input_unreadable(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """A structures file the script cannot read fails again on restart: abort."""
        return self.abort(node, "ERROR_INPUT_UNREADABLE", "the structures file is unreadable")

    @process_handler(
        priority=500,
        exit_codes=[MaceCalculation.exit_codes.ERROR_OUT_OF_MEMORY, CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_MEMORY],
    )
    def handle_out_of_memory(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Out of memory or killed: halve ``batch_size`` and ``max_batch_atoms``, restart; abort at one structure."""
        parameters = self.ctx.inputs.parameters
        batch_size, max_batch_atoms = int(parameters["batch_size"]), int(parameters["max_batch_atoms"])
        if batch_size <= 1 or max_batch_atoms <= 1:
            self.report_error_handled(node, "every batch already holds one structure: aborting")
            exit_code = self.exit_codes.ERROR_OUT_OF_MEMORY_SINGLE_STRUCTURE.format(
                batch_size=batch_size, max_batch_atoms=max_batch_atoms
            )
            return ProcessHandlerReport(True, exit_code)
        factor = self.defaults.batch_reduction_factor
        parameters["batch_size"] = max(1, batch_size // factor)
        parameters["max_batch_atoms"] = max(1, max_batch_atoms // factor)
        self.report_error_handled(
            node,
            f"batch_size {batch_size} -> {parameters['batch_size']}, max_batch_atoms {max_batch_atoms} -> "
            f"{parameters['max_batch_atoms']}: restarting",
        )
        return ProcessHandlerReport(True)

    @process_handler(
        priority=400,
        exit_codes=[
            MaceCalculation.exit_codes.ERROR_OUT_OF_WALLTIME,
            CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME,
        ],
    )
    def handle_out_of_walltime(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Out of walltime: rerun from scratch (no checkpoint exists) with doubled ``max_wallclock_seconds``."""
        return self.restart_with_more_walltime(
            node, self.defaults.walltime_factor, self.defaults.fallback_max_wallclock_seconds
        )
