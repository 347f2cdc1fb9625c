"""Production deployment: PostgreSQL + RabbitMQ profile, made by the setup command, running the main job."""

from __future__ import annotations

import pathlib
import secrets
import shutil
import socket
import sys

import pytest

from .cli.test_setup_command import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.production]

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "run_si_pw.py"


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def production_services():
    missing = [name for name, port in (("PostgreSQL", 5432), ("RabbitMQ", 5672)) if not reachable(port)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not listening on 127.0.0.1: the production profile cannot be tested")


def test_work_chain_runs_on_the_daemon_of_a_postgres_rabbitmq_profile(production_services, tmp_path):
    profile = f"prod-{secrets.token_hex(4)}"
    verdi = [sys.executable, "-m", "aiida", "-p", profile]
    setup = [shutil.which("aiida-pyacemaker") or "aiida-pyacemaker", "setup", "--profile", profile]
    try:
        created = run_cli(*setup, "--database", "postgresql", "--broker", "rabbitmq", aiida_path=tmp_path)
        assert "core.psql_dos" in created.stdout and "core.rabbitmq" in created.stdout
        job = run_cli(sys.executable, str(EXAMPLE), "--profile", profile, "--stringency", "low", aiida_path=tmp_path)
        assert "energy = " in job.stdout and "force[1] = " in job.stdout
        status = run_cli(*verdi, "process", "list", "-a", "-S", "finished", aiida_path=tmp_path)
        assert "PwBaseWorkChain" in status.stdout
    finally:
        run_cli(*verdi, "daemon", "stop", aiida_path=tmp_path, check=False)
        run_cli(*verdi[:-2], "profile", "delete", "--force", "--delete-data", profile, aiida_path=tmp_path, check=False)
