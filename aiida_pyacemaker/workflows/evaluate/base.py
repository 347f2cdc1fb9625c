"""``EvaluateBaseWorkChain``: runs an ``EvaluateCalculation`` (labels from an ACE or MACE potential, ionic
relaxations where asked) and restarts it where that helps.

The handlers are ``PotentialScriptWrapper``'s: an unreadable potential (310) or structures file (311) abort at once;
out of walltime (400, or the scheduler's 120) reruns from scratch with doubled walltime.
"""

from __future__ import annotations

from ...calculations.evaluate import DEFAULT_PARAMETERS, EvaluateCalculation
from ..restart import PotentialScriptWrapper

__all__ = ("EvaluateBaseWorkChain",)


class EvaluateBaseWorkChain(PotentialScriptWrapper):
    """Label structures with an ACE potential or a MACE model (``EvaluateCalculation``), with restarts; the builder's
    ``potential`` is an ``AcePotentialData`` or a ``MaceModelData``, ``structure_set`` the structures (array ``relax``
    flags the rows whose ions relax)."""

    _process_class = EvaluateCalculation
    _protocol_file = "evaluate/base"
    _namespace = "evaluate"
    _default_parameters = DEFAULT_PARAMETERS
