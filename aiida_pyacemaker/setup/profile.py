"""Create or reuse the AiiDA profile, and make sure it has a configured ``localhost`` computer."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import TYPE_CHECKING

from .quantum_espresso import SetupError
from .result import StepResult

if TYPE_CHECKING:
    from aiida.orm import Computer

BROKERS = {"zeromq": "core.zeromq", "rabbitmq": "core.rabbitmq", "none": None}
DATABASES = {"sqlite": "core.sqlite_dos", "postgresql": "core.psql_dos"}


def _presto_command(name: str, database: str, broker: str, postgres_host: str, postgres_port: int) -> list[str]:
    command = [sys.executable, "-m", "aiida", "presto", "--profile-name", name, "--non-interactive"]
    if database == "postgresql":
        command += [
            "--use-postgres",
            "--postgres-hostname",
            postgres_host,
            "--postgres-port",
            str(postgres_port),
            "--postgres-username",
            "postgres",
        ]
    if broker == "zeromq":
        command.append("--use-zeromq")
    elif broker == "none":
        command.append("--no-broker")
    return command


def _describe(profile) -> str:
    return f"`{profile.name}` (storage {profile.storage_backend}, broker {profile.process_control_backend or 'none'})"


def ensure_profile(
    name: str,
    database: str = "sqlite",
    broker: str = "zeromq",
    postgres_host: str = "127.0.0.1",
    postgres_port: int = 5432,
) -> StepResult:
    """Load profile ``name``, creating it with ``verdi presto`` when it does not exist yet."""
    from aiida.manage.configuration import get_config, load_profile, reset_config

    if database not in DATABASES:
        raise SetupError(f"database must be one of {sorted(DATABASES)}, not `{database}`.")
    if broker not in BROKERS:
        raise SetupError(f"broker must be one of {sorted(BROKERS)}, not `{broker}`.")

    config = get_config(create=True)
    if name in config.profile_names:
        profile = load_profile(name, allow_switch=True)
        return StepResult("profile", False, f"{_describe(profile)} in {config.dirpath}")

    command = _presto_command(name, database, broker, postgres_host, postgres_port)
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        hint = ""
        if "locale" in completed.stderr + completed.stdout:
            hint = (
                "\nPostgreSQL could not create the database with the en_US.UTF-8 locale: run "
                "`sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen && locale-gen`."
            )
        raise SetupError(f"`verdi presto` failed:\n{completed.stdout}{completed.stderr}{hint}")

    reset_config()
    profile = load_profile(name, allow_switch=True)
    wanted = BROKERS[broker]
    if profile.process_control_backend != wanted:
        raise SetupError(
            f"profile `{name}` was created with broker {profile.process_control_backend}, not {wanted}: "
            f"is the broker service running? Remove it with `verdi profile delete {name}` and retry."
        )
    return StepResult("profile", True, f"{_describe(profile)} in {get_config().dirpath}")


def ensure_localhost(label: str = "localhost") -> tuple[Computer, StepResult]:
    """Return the ``localhost`` computer of the loaded profile, creating and configuring it when missing."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent
    from aiida.manage.configuration import get_config, get_profile

    try:
        computer = orm.load_computer(label)
        changed = False
    except NotExistent:
        profile = get_profile()
        assert profile is not None
        workdir = pathlib.Path(get_config().dirpath) / "scratch" / profile.name
        computer = orm.Computer(
            label=label,
            hostname="localhost",
            description="Local machine, created by aiida-pyacemaker setup",
            transport_type="core.local",
            scheduler_type="core.direct",
            workdir=str(workdir),
        ).store()
        changed = True
    if not computer.is_configured:
        computer.configure(safe_interval=0)
        changed = True
    if computer.get_default_mpiprocs_per_machine() is None:
        computer.set_default_mpiprocs_per_machine(1)
    return computer, StepResult("computer", changed, f"`{computer.label}` ({computer.transport_type})")
