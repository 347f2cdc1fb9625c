"""The ``aiida-pyacemaker setup`` command, run as a user runs it, in a throw-away AiiDA configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run_cli(*args: str, aiida_path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a console command with its own AiiDA configuration folder."""
    env = dict(os.environ, AIIDA_PATH=str(aiida_path), AIIDA_WARN_v3="0")
    completed = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=600)
    if check and completed.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


@pytest.fixture
def cli_executable() -> str:
    executable = shutil.which("aiida-pyacemaker")
    assert executable, "the console script is not installed: pip install -e ."
    return executable


def test_setup_twice_changes_nothing_the_second_time(cli_executable, tmp_path):
    profile = "idempotence"
    try:
        first = run_cli(cli_executable, "setup", "--profile", profile, aiida_path=tmp_path)
        assert "[created] profile" in first.stdout
        assert "[created] code pw@localhost" in first.stdout
        assert "[created] pseudo family" in first.stdout
        assert "[created] daemon" in first.stdout
        assert "core.sqlite_dos" in first.stdout and "core.zeromq" in first.stdout

        second = run_cli(cli_executable, "setup", "--profile", profile, aiida_path=tmp_path)
        assert "[created]" not in second.stdout
        assert f"Nothing changed: profile `{profile}` was already set up." in second.stdout

        codes = run_cli(sys.executable, "-m", "aiida", "-p", profile, "code", "list", aiida_path=tmp_path)
        assert codes.stdout.count("pw@localhost") == 1
    finally:
        run_cli(sys.executable, "-m", "aiida", "-p", profile, "daemon", "stop", aiida_path=tmp_path, check=False)


def test_setup_reuses_an_existing_profile_without_touching_its_broker(cli_executable, tmp_path):
    run_cli(sys.executable, "-m", "aiida", "presto", "--profile-name", "mine", "--no-broker", aiida_path=tmp_path)
    result = run_cli(cli_executable, "setup", "--profile", "mine", "--no-daemon", aiida_path=tmp_path)
    assert "[exists ] profile: `mine`" in result.stdout
    assert "broker none" in result.stdout
    assert "[created] code pw@localhost" in result.stdout


def test_setup_rejects_an_unknown_broker(cli_executable, tmp_path):
    result = run_cli(cli_executable, "setup", "--broker", "kafka", aiida_path=tmp_path, check=False)
    assert result.returncode == 2
    assert "kafka" in result.stderr
