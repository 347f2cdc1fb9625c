"""``aiida-pyacemaker setup``: one idempotent command from a bare machine to a running daemon."""

from __future__ import annotations

import click

from ..setup import SetupOptions, run_setup
from ..setup.profile import BROKERS, DATABASES
from ..setup.pseudos import DEFAULT_FAMILY
from ..setup.quantum_espresso import SetupError


@click.command()
@click.option("--profile", default="pyacemaker", show_default=True, help="Profile to create, or reuse if it exists.")
@click.option("--database", type=click.Choice(sorted(DATABASES)), default="sqlite", show_default=True)
@click.option(
    "--broker",
    type=click.Choice(sorted(BROKERS)),
    default="zeromq",
    show_default=True,
    help="zeromq runs inside the daemon and needs no service; rabbitmq is for production.",
)
@click.option("--postgres-host", default="127.0.0.1", show_default=True)
@click.option("--postgres-port", default=5432, show_default=True, type=int)
@click.option("--pseudo-family", default=DEFAULT_FAMILY, show_default=True)
@click.option("--install-qe/--no-install-qe", default=True, show_default=True, help="apt-get install pw.x if missing.")
@click.option("--daemon/--no-daemon", "start_daemon", default=True, show_default=True)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Daemon workers.")
def setup(
    profile: str,
    database: str,
    broker: str,
    postgres_host: str,
    postgres_port: int,
    pseudo_family: str,
    install_qe: bool,
    start_daemon: bool,
    workers: int,
) -> None:
    """Install pw.x if needed, create or reuse a profile, register codes and pseudos, start the daemon.

    Running it again changes nothing and says so.
    """
    options = SetupOptions(
        profile=profile,
        database=database,
        broker=broker,
        postgres_host=postgres_host,
        postgres_port=postgres_port,
        install_qe=install_qe,
        pseudo_family=pseudo_family,
        start_daemon=start_daemon,
        daemon_workers=workers,
    )
    try:
        results = run_setup(options)
    except SetupError as exception:
        raise click.ClickException(str(exception)) from exception
    for result in results:
        click.echo(result.line())
    if any(result.changed for result in results):
        click.echo(f"Setup complete: profile `{profile}` is ready.")
    else:
        click.echo(f"Nothing changed: profile `{profile}` was already set up.")
