"""Start the daemon of the loaded profile."""

from __future__ import annotations

from .quantum_espresso import SetupError
from .result import StepResult


def ensure_daemon(profile_name: str, workers: int = 1) -> StepResult:
    """Start the daemon (and, for a ZeroMQ profile, its built-in broker) unless it is running."""
    from aiida.engine.daemon.client import DaemonException, get_daemon_client

    client = get_daemon_client(profile_name)
    if client.is_daemon_running:
        return StepResult("daemon", False, f"running for `{profile_name}`")
    try:
        client.start_daemon(number_workers=workers)
    except DaemonException as exception:
        raise SetupError(f"the daemon of `{profile_name}` did not start: {exception}") from exception
    return StepResult("daemon", True, f"started for `{profile_name}` with {workers} worker(s)")
