"""Turn on AiiDA caching for pw.x, so an identical structure is never computed twice by the DFT tier."""

from __future__ import annotations

from .result import StepResult

#: PwBaseWorkChain writes `max_seconds` (from max_wallclock_seconds) into the parameters: keep the walltime the
#: same between runs, or identical structures hash differently and are computed again.
CACHED_PROCESSES = ("aiida.calculations:quantumespresso.pw",)


def ensure_caching(profile_name: str) -> StepResult:
    """Add the plugin's cached processes to the profile's ``caching.enabled_for``."""
    from aiida.manage.configuration import get_config

    config = get_config()
    enabled = list(config.get_option("caching.enabled_for", scope=profile_name) or [])
    missing = [name for name in CACHED_PROCESSES if name not in enabled]
    if not missing:
        return StepResult("caching", False, f"enabled for {', '.join(CACHED_PROCESSES)}")
    config.set_option("caching.enabled_for", enabled + missing, scope=profile_name)
    config.store()
    return StepResult("caching", True, f"enabled for {', '.join(missing)}")
