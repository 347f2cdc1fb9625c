"""``aiida-pyacemaker doctor``: check a profile's daemon and broker; with ``--fix``, restart the daemon cleanly.

After an unclean death of the daemon (``kill -9``, the OOM killer, a power cut), ``aiida-pyacemaker doctor --fix``
is the one command to run: it finds a stale PID file, a daemon without workers, workers that never subscribed to the
broker (tasks pending, nobody to take them), daemon processes left outside the daemon and the files of a dead ZeroMQ
broker, then stops the daemon cleanly, clears what the dead one left, starts it and waits until every worker has
subscribed. Exit status 0: the daemon works (or nothing needed it); 1: a problem remains.
"""

from __future__ import annotations

import time

import click


@click.command()
@click.option("--profile", default=None, help="Profile to check [default: the default profile].")
@click.option("--fix/--no-fix", default=False, show_default=True, help="Restart the daemon cleanly when a check fails.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Workers to start with --fix [default: as many as were running, else daemon.default_workers].",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to give freshly started workers to subscribe before judging them.",
)
def doctor(profile: str | None, fix: bool, workers: int | None, wait: float) -> None:
    """Check the daemon and broker of a profile; with --fix, restart the daemon cleanly if a check fails."""
    from aiida import load_profile
    from aiida.common.exceptions import MissingConfigurationError, ProfileConfigurationError

    from ..setup.daemon_health import RecoveryError, check, is_healthy, recover

    try:
        loaded = load_profile(profile, allow_switch=True)
    except (MissingConfigurationError, ProfileConfigurationError) as exception:
        raise click.ClickException(f"no profile to check: {exception}") from exception
    click.echo(
        f"Profile `{loaded.name}`: storage {loaded.storage_backend}, broker {loaded.process_control_backend or 'none'}"
    )
    _, findings = check(loaded, wait=wait)
    for finding in findings:
        click.echo(finding.line())
    if is_healthy(findings):
        click.echo("Healthy: nothing to do.")
        return
    if not fix:
        click.echo(f"Not healthy. Recover with: aiida-pyacemaker doctor --profile {loaded.name} --fix")
        raise SystemExit(1)
    start = time.monotonic()
    try:
        actions, findings = recover(loaded, workers=workers)
    except RecoveryError as exception:
        raise click.ClickException(f"could not recover: {exception}") from exception
    for action in actions:
        click.echo(f"[fixed] {action}")
    for finding in findings:
        click.echo(finding.line())
    click.echo(f"Recovered in {time.monotonic() - start:.0f} s: the daemon takes tasks again.")
