"""Start the daemon of the loaded profile, or bring a broken one back (the checks of ``aiida-pyacemaker doctor``)."""

from __future__ import annotations

from .daemon_health import RecoveryError, check, clear_stale_broker_files, is_healthy, recover
from .quantum_espresso import SetupError
from .result import StepResult


def ensure_daemon(profile_name: str, workers: int = 1) -> StepResult:
    """Start the daemon (and, for a ZeroMQ profile, its built-in broker) unless it runs and takes tasks.

    A daemon that died uncleanly or whose workers never subscribed to the broker is restarted cleanly; the files a
    dead ZeroMQ broker left behind are removed before any start (else a worker may connect to the dead socket).
    """
    from aiida.engine.daemon.client import DaemonException, get_daemon_client

    client = get_daemon_client(profile_name)
    profile = client.profile
    if client.is_daemon_running:
        snapshot, findings = check(profile)
        if is_healthy(findings) and snapshot.daemon_running:
            return StepResult("daemon", False, f"running for `{profile_name}`")
        problems = "; ".join(finding.message for finding in findings if not finding.ok) or "not running"
        try:
            recover(profile, workers=workers)
        except RecoveryError as exception:
            raise SetupError(f"the daemon of `{profile_name}` does not work: {exception}") from exception
        return StepResult("daemon", True, f"restarted cleanly for `{profile_name}` ({problems})")
    clear_stale_broker_files(profile)
    try:
        client.start_daemon(number_workers=workers)
    except DaemonException as exception:
        raise SetupError(f"the daemon of `{profile_name}` did not start: {exception}") from exception
    return StepResult("daemon", True, f"started for `{profile_name}` with {workers} worker(s)")
