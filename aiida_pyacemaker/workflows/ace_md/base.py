"""``AceMdBaseWorkChain``: runs an ``AceMdCalculation`` (MD with ACE and gamma) and restarts it where that helps.

The handlers are ``PotentialScriptWrapper``'s: an unreadable potential (310) or start structures (311) abort at
once; out of walltime (400, or the scheduler's 120) reruns from scratch with doubled walltime. Out of memory (410)
is left unhandled: MD of a few hundred atoms runs out of memory only on a shared machine, which a restart does not
fix.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine.processes.builder import ProcessBuilder

from ...calculations.ace_md import DEFAULT_PARAMETERS, AceMdCalculation
from ...data.ace_potential import AcePotentialData
from ...data.structure_set import StructureSetData
from ..restart import PotentialScriptWrapper

__all__ = ("AceMdBaseWorkChain",)


class AceMdBaseWorkChain(PotentialScriptWrapper):
    """MD with an ACE potential (``AceMdCalculation``), restarting on walltime failures."""

    _process_class = AceMdCalculation
    _protocol_file = "ace_md/base"
    _namespace = "md"
    _default_parameters = DEFAULT_PARAMETERS

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode | str,
        potential: AcePotentialData | None = None,
        structure_set: StructureSetData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """A builder filled from ``protocols/ace_md/base.yaml``.

        :param code: the code (or its label) whose Python has python-ace.
        :param potential: the ACE potential with its active set; leave it out when a parent sets it.
        :param structure_set: the start structures; leave it out when a parent sets them.
        :param protocol: ``fast``, ``balanced`` or ``stringent`` (default: the file's ``default_protocol``).
        :param overrides: nested inputs merged over the protocol's, in the layout of this work chain's ports.
        :param options: merged over ``md.metadata.options``.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        return cls.builder_from_protocol_inputs(inputs, code, options, potential=potential, structure_set=structure_set)
