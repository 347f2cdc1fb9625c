"""What the plugin's restart wrappers share: a builder filled from their protocol, and the report of a handled
failure. ``MaceBaseWorkChain``, ``MaceTrainBaseWorkChain`` and ``PacemakerBaseWorkChain`` derive from
``RestartWrapper``; ``AceMdBaseWorkChain`` and ``EvaluateBaseWorkChain`` from ``PotentialScriptWrapper``, which
adds the handlers of a script that loads a potential and some structures and writes its outputs at the end."""

from __future__ import annotations

from typing import Any, ClassVar

from aiida import orm
from aiida.common import AttributeDict
from aiida.common.lang import type_check
from aiida.engine import BaseRestartWorkChain, CalcJob, ExitCode, ProcessHandlerReport, process_handler, while_
from aiida.engine.processes.builder import ProcessBuilder

from ..protocols import ProtocolMixin, as_input_nodes, recursive_merge


class RestartWrapper(ProtocolMixin, BaseRestartWorkChain):
    """A ``BaseRestartWorkChain`` around one CalcJob whose inputs are exposed in the namespace ``_namespace``."""

    _namespace: ClassVar[str]
    #: The CalcJob's outputs that the wrapper exposes (None: all of them).
    _exposed_outputs: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def define(cls, spec) -> None:
        """The CalcJob's inputs in ``_namespace``, its outputs at the top level, the restart loop."""
        super().define(spec)
        spec.expose_inputs(cls._process_class, namespace=cls._namespace)
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),  # type: ignore[arg-type]
            cls.results,
        )
        spec.expose_outputs(cls._process_class, include=cls._exposed_outputs)

    @classmethod
    def builder_from_protocol_inputs(
        cls,
        inputs: dict[str, Any],
        code: orm.AbstractCode | str,
        options: dict[str, Any] | None = None,
        **nodes: Any,
    ) -> ProcessBuilder:
        """A builder from the merged protocol ``inputs`` (plain values, as ``get_protocol_inputs`` gives them).

        The CalcJob's part (``inputs[_namespace]``) is checked against the CalcJob's own ports, so a misspelt key
        is an error naming it; ``code`` and the ``nodes`` that are not None are set there; ``options`` are merged
        into its ``metadata.options``.
        """
        if isinstance(code, str):
            code = orm.load_code(code)
        type_check(code, orm.AbstractCode)
        namespace = cls._namespace
        calculation = dict(inputs.pop(namespace, {}))
        metadata = dict(calculation.pop("metadata", {}))
        if options:
            metadata["options"] = recursive_merge(metadata.get("options", {}), options)
        process_class = cls._process_class
        if process_class is None:
            raise TypeError(f"{cls.__name__} names no _process_class")
        calculation_nodes = as_input_nodes(process_class.spec().inputs, calculation, namespace)
        wrapper_nodes = as_input_nodes(cls.spec().inputs, inputs)

        builder = cls.get_builder()
        for key, value in wrapper_nodes.items():
            builder[key] = value
        target = builder[namespace]
        target["code"] = code
        for key, value in {**calculation_nodes, **nodes}.items():
            if value is not None:
                target[key] = value
        target["metadata"] = metadata
        return builder

    def report_error_handled(self, node: orm.CalcJobNode, action: str) -> None:
        """Report the failure of ``node`` and the action taken."""
        self.report(f"{node.process_label}<{node.pk}> failed with exit status {node.exit_status}: {node.exit_message}")
        self.report(f"Action taken: {action}")

    def abort(self, node: orm.CalcJobNode, exit_code_label: str, reason: str) -> ProcessHandlerReport:
        """A failure that a restart cannot fix: stop with this wrapper's ``exit_code_label`` and the child's message."""
        self.report_error_handled(node, f"{reason}, a restart cannot help: aborting")
        return ProcessHandlerReport(True, self.exit_codes[exit_code_label].format(message=node.exit_message))

    def restart_with_more_walltime(self, node: orm.CalcJobNode, factor: float, fallback: int) -> ProcessHandlerReport:
        """Out of walltime with no checkpoint to continue from: rerun from scratch with ``factor`` x the walltime
        (``fallback`` seconds when none was set); ``max_iterations`` bounds the growth."""
        options = self.ctx.inputs.metadata.options
        current = options.get("max_wallclock_seconds") or node.get_option("max_wallclock_seconds")
        walltime = int(current * factor) if current else int(fallback)
        options["max_wallclock_seconds"] = walltime
        self.report_error_handled(node, f"max_wallclock_seconds {current} -> {walltime}: restarting from scratch")
        return ProcessHandlerReport(True)


#: The exit codes every potential script's CalcJob has (``AceMdCalculation``, ``EvaluateCalculation``); handlers
#: match a child's exit status, so these serve both.
POTENTIAL_UNREADABLE = ExitCode(310, "ERROR_POTENTIAL_UNREADABLE")
INPUT_UNREADABLE = ExitCode(311, "ERROR_INPUT_UNREADABLE")
OUT_OF_WALLTIME = ExitCode(400, "ERROR_OUT_OF_WALLTIME")


class PotentialScriptWrapper(RestartWrapper):
    """A wrapper of a CalcJob that runs a potential on structures (exit codes 310, 311, 400 as above).

    * ``handle_potential_unreadable`` (310) and ``handle_input_unreadable`` (311) fail again on every restart: abort
      with the wrapper's exit code and the child's message;
    * ``handle_out_of_walltime`` (400, or the scheduler's 120): the script writes its outputs at the end, so the job
      is rerun from scratch with doubled ``max_wallclock_seconds``; ``max_iterations`` bounds the growth.

    Anything else is left to ``BaseRestartWorkChain``'s ``on_unhandled_failure``.
    """

    #: The CalcJob's parameter defaults (``ctx.inputs.parameters`` is a plain dict with all of them).
    _default_parameters: ClassVar[dict[str, Any]]
    defaults = AttributeDict({"walltime_factor": 2, "fallback_max_wallclock_seconds": 3600})

    @classmethod
    def define(cls, spec) -> None:
        super().define(spec)
        spec.exit_code(
            310,
            "ERROR_POTENTIAL_UNREADABLE",
            message="The potential cannot be loaded; a restart cannot help: {message}",
        )
        spec.exit_code(
            311, "ERROR_INPUT_UNREADABLE", message="The structures cannot be read; a restart cannot help: {message}"
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode | str,
        potential: orm.Data | None = None,
        structure_set: orm.Data | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """A builder filled from the wrapper's protocol file.

        :param code: the code (or its label) whose Python runs the script.
        :param potential: the potential; leave it out when a parent sets it.
        :param structure_set: the structures; leave them out when a parent sets them.
        :param protocol: ``fast``, ``balanced`` or ``stringent`` (default: the file's ``default_protocol``).
        :param overrides: nested inputs merged over the protocol's, in the layout of the wrapper's ports.
        :param options: merged over the CalcJob's ``metadata.options``.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        return cls.builder_from_protocol_inputs(inputs, code, options, potential=potential, structure_set=structure_set)

    def setup(self) -> None:
        """``ctx.inputs`` from the namespace, with every default parameter filled in."""
        super().setup()
        assert self._process_class is not None
        self.ctx.inputs = AttributeDict(self.exposed_inputs(self._process_class, self._namespace))
        given = self.ctx.inputs.parameters.get_dict() if "parameters" in self.ctx.inputs else {}
        self.ctx.inputs.parameters = {**self._default_parameters, **given}
        self.ctx.inputs.metadata = AttributeDict(self.ctx.inputs.get("metadata", {}))
        self.ctx.inputs.metadata.options = AttributeDict(self.ctx.inputs.metadata.get("options", {}))

    @process_handler(priority=600, exit_codes=[POTENTIAL_UNREADABLE])
    def handle_potential_unreadable(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """A potential that cannot be loaded fails again on restart: abort."""
        return self.abort(node, "ERROR_POTENTIAL_UNREADABLE", "the potential is unreadable")

    @process_handler(priority=590, exit_codes=[INPUT_UNREADABLE])
    def handle_input_unreadable(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Structures the script cannot read fail again on restart: abort."""
        return self.abort(node, "ERROR_INPUT_UNREADABLE", "the structures are unreadable")

    @process_handler(priority=400, exit_codes=[OUT_OF_WALLTIME, CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Out of walltime: rerun from scratch with doubled ``max_wallclock_seconds``."""
        return self.restart_with_more_walltime(
            node, self.defaults.walltime_factor, self.defaults.fallback_max_wallclock_seconds
        )
