"""A throw-away AiiDA profile for benchmarks: SQLite, no broker (``run`` only), in a temporary AIIDA_PATH."""

from __future__ import annotations

import os
import tempfile


def temporary_profile(name: str = "bench", folder: str | None = None) -> str:
    """Create (or, in an existing ``folder``, reuse) and load a profile with the localhost computer and the plugin's
    codes; return its folder (AIIDA_PATH)."""
    folder = folder or tempfile.mkdtemp(prefix="pyacemaker-bench-")
    os.makedirs(folder, exist_ok=True)
    os.environ["AIIDA_PATH"] = folder
    from aiida_pyacemaker.setup.codes import PLUGIN_CODES, ensure_code
    from aiida_pyacemaker.setup.profile import ensure_localhost, ensure_profile

    ensure_profile(name, broker="none")
    computer, _ = ensure_localhost()
    for spec in PLUGIN_CODES:
        ensure_code(spec, computer)
    return folder


def poll_interval() -> float:
    """Seconds between two scheduler polls of the ``localhost`` computer: how late AiiDA may see a finished job."""
    from aiida import orm

    return float(orm.load_computer("localhost").get_minimum_job_poll_interval())
