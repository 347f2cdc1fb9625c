"""What the plugin's restart wrappers share: a builder filled from their protocol, and the report of a handled
failure. ``MaceBaseWorkChain``, ``MaceTrainBaseWorkChain`` and ``PacemakerBaseWorkChain`` derive from it."""

from __future__ import annotations

from typing import Any, ClassVar

from aiida import orm
from aiida.common.lang import type_check
from aiida.engine import BaseRestartWorkChain, while_
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
