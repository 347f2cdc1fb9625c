"""``EvaluateBaseWorkChain``: runs an ``EvaluateCalculation`` (labels from an ACE or MACE potential, ionic
relaxations where asked) and restarts it where that helps.

The handlers are ``PotentialScriptWrapper``'s: an unreadable potential (310) or structures file (311) abort at once;
out of walltime (400, or the scheduler's 120) reruns from scratch with doubled walltime.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine.processes.builder import ProcessBuilder

from ...calculations.evaluate import DEFAULT_PARAMETERS, EvaluateCalculation
from ...data.ace_potential import AcePotentialData
from ...data.mace_model import MaceModelData
from ...data.structure_set import StructureSetData
from ..restart import PotentialScriptWrapper

__all__ = ("EvaluateBaseWorkChain",)


class EvaluateBaseWorkChain(PotentialScriptWrapper):
    """Label structures with an ACE potential or a MACE model (``EvaluateCalculation``), with restarts."""

    _process_class = EvaluateCalculation
    _protocol_file = "evaluate/base"
    _namespace = "evaluate"
    _default_parameters = DEFAULT_PARAMETERS

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode | str,
        potential: AcePotentialData | MaceModelData | None = None,
        structure_set: StructureSetData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """A builder filled from ``protocols/evaluate/base.yaml``.

        :param code: the code (or its label) whose Python has python-ace and/or mace-torch.
        :param potential: the ACE potential or MACE model; leave it out when a parent sets it.
        :param structure_set: the structures (array ``relax`` flags rows to relax); leave it out when a parent sets it.
        :param protocol: ``fast``, ``balanced`` or ``stringent`` (default: the file's ``default_protocol``).
        :param overrides: nested inputs merged over the protocol's, in the layout of this work chain's ports.
        :param options: merged over ``evaluate.metadata.options``.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        return cls.builder_from_protocol_inputs(inputs, code, options, potential=potential, structure_set=structure_set)
