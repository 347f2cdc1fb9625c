"""``AceMdBaseWorkChain``: runs an ``AceMdCalculation`` (MD with ACE and gamma) and restarts it where that helps.

The handlers are ``PotentialScriptWrapper``'s: an unreadable potential (310) or start structures (311) abort at
once; out of walltime (400, or the scheduler's 120) reruns from scratch with doubled walltime. Out of memory (410)
is left unhandled: MD of a few hundred atoms runs out of memory only on a shared machine, which a restart does not
fix.
"""

from __future__ import annotations

from ...calculations.ace_md import DEFAULT_PARAMETERS, AceMdCalculation
from ..restart import PotentialScriptWrapper

__all__ = ("AceMdBaseWorkChain",)


class AceMdBaseWorkChain(PotentialScriptWrapper):
    """MD with an ACE potential (``AceMdCalculation``), restarting on walltime failures; the builder's
    ``potential`` is an ``AcePotentialData`` with its active set, ``structure_set`` the start structures."""

    _process_class = AceMdCalculation
    _protocol_file = "ace_md/base"
    _namespace = "md"
    _default_parameters = DEFAULT_PARAMETERS
