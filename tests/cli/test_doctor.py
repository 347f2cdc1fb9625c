"""``aiida-pyacemaker doctor``: the checks offline; on real daemons, recovery after ``kill -9`` while pw.x runs.

The slow tests make a throw-away profile with ``aiida-pyacemaker setup`` (the default SQLite + ZeroMQ one, and the
production PostgreSQL + RabbitMQ one), SIGKILL its daemon (circus, its ZeroMQ broker, its workers) while a
``TieredOracleWorkChain`` has pw.x jobs running, recover exactly as the README says (``aiida-pyacemaker doctor
--fix``), and check that no row was lost and no pw.x ran twice: a watcher thread records every pw.x process (PID,
start time) per CalcJob work directory. The scenarios run in their own Python, ``python -m tests.cli.test_doctor
--profile NAME --scenario crash|stuck``.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from aiida_pyacemaker.setup.daemon_health import (
    RABBITMQ,
    SUBSCRIBE_GRACE_S,
    ZEROMQ,
    DaemonSnapshot,
    _broker_pid,
    _is_broker_of,
    broker_service_dir,
    diagnose,
    is_healthy,
    is_settled,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROWS = 4  # structures, all routed to pw.x
T0 = 1_800_000_000.0


# --- Offline: the judgement on snapshots of measured states --------------------------------------------------------


def snapshot(**changes) -> DaemonSnapshot:
    """A healthy ZeroMQ daemon with two workers that started at T0, looked at 60 s later."""
    values = dict(
        profile="p",
        broker=ZEROMQ,
        taken_at=T0 + 60,
        daemon_pid=100,
        daemon_alive=True,
        daemon_started=T0,
        workers=(T0, T0),
        broker_reachable=True,
        broker_status={"task_subscribers": 2, "pending_tasks": 0, "processing_tasks": 2, "timestamp": T0 + 58},
    )
    values.update(changes)
    return DaemonSnapshot(**values)


def problems(findings) -> list[str]:
    return [finding.check for finding in findings if not finding.ok]


def test_a_healthy_daemon_passes():
    findings = diagnose(snapshot())
    assert is_healthy(findings) and is_settled(snapshot())
    assert "2 of 2 worker(s) subscribed; 0 task(s) pending, 2 processing" in findings[-1].message


def test_workers_that_never_subscribed_are_found_once_their_grace_time_is_over():
    # Measured after `kill -9` + `verdi daemon start`: 5 tasks pending, 0 task subscribers, for minutes.
    stuck = snapshot(broker_status={"task_subscribers": 0, "pending_tasks": 5, "timestamp": T0 + 58})
    assert is_settled(stuck)
    findings = diagnose(stuck)
    assert problems(findings) == ["broker"]
    assert "0 of 2 worker(s) subscribed; 5 task(s) pending" in findings[-1].message
    half = snapshot(broker_status={"task_subscribers": 1, "pending_tasks": 0, "timestamp": T0 + 58})
    assert problems(diagnose(half)) == ["broker"]
    # The same counts in a status written before the workers had their grace time: not judged yet.
    early = snapshot(taken_at=T0 + 12, broker_status={"task_subscribers": 0, "pending_tasks": 5, "timestamp": T0 + 10})
    assert not is_settled(early)
    assert is_healthy(diagnose(early)) and "still starting" in diagnose(early)[-1].message
    assert SUBSCRIBE_GRACE_S <= 30


def test_a_daemon_killed_with_sigkill_leaves_a_stale_pid_file_and_broker_files():
    dead = snapshot(
        daemon_alive=False,
        workers=(),
        broker_reachable=False,
        broker_status=None,
        stale_broker_files=("/x/broker.pid", "/x/broker.sockets", "/x/broker.status"),
        active_processes=7,
    )
    findings = diagnose(dead)
    assert problems(findings) == ["daemon", "broker files"]
    assert "names 100, which is not a running daemon" in findings[0].message
    assert "7 process(es) wait" in findings[0].message
    assert "broker.pid, broker.sockets, broker.status" in findings[1].message
    assert all(finding.fixable for finding in findings)


def test_a_stopped_daemon_is_fine_unless_processes_wait_for_it():
    stopped = snapshot(daemon_pid=None, daemon_alive=False, workers=(), broker_reachable=False, broker_status=None)
    assert is_healthy(diagnose(stopped))
    waiting = snapshot(
        daemon_pid=None, daemon_alive=False, workers=(), broker_reachable=False, broker_status=None, active_processes=3
    )
    assert problems(diagnose(waiting)) == ["daemon"]


def test_a_fresh_daemon_gets_its_grace_time_and_then_must_have_workers_and_a_broker():
    starting = snapshot(taken_at=T0 + 3, workers=(), broker_reachable=False, broker_status=None)
    assert not is_settled(starting) and is_healthy(diagnose(starting))
    late = snapshot(workers=(), broker_reachable=False, broker_status=None)
    assert problems(diagnose(late)) == ["daemon", "broker"]
    silent = snapshot(broker_status={"task_subscribers": 2, "timestamp": T0 - 100})
    assert problems(diagnose(silent)) == ["broker"] and "160 s" in diagnose(silent)[-1].message


def test_calcjobs_caught_in_their_submission_are_named_when_the_daemon_is_down():
    pending = ((12, "/scratch/ab/cd"),)
    dead = snapshot(daemon_alive=False, workers=(), broker_reachable=False, broker_status=None, submitting=pending)
    (warning,) = [finding for finding in diagnose(dead) if finding.warning]
    assert warning.ok and "CalcJob<12> in /scratch/ab/cd" in warning.message and "runs twice" in warning.message
    assert warning.line().startswith("[warning] submissions:")
    assert not any(finding.warning for finding in diagnose(snapshot(submitting=pending)))  # transient when healthy


def test_orphaned_daemon_processes_are_a_problem():
    findings = diagnose(snapshot(orphans=(4242, 4243)))
    assert problems(findings) == ["orphans"] and "PID 4242, 4243" in findings[1].message


def test_rabbitmq_profiles_check_the_workers_the_queue_consumers_and_the_service():
    queue = {"pending_tasks": 3, "task_subscribers": 2, "timestamp": T0 + 60}
    healthy = snapshot(broker=RABBITMQ, broker_status=queue, active_processes=2)
    assert (
        is_healthy(diagnose(healthy))
        and "2 of 2 worker(s) subscribed; 3 task(s) pending" in diagnose(healthy)[-1].message
    )
    lonely = snapshot(broker=RABBITMQ, broker_status={**queue, "task_subscribers": 0})
    assert problems(diagnose(lonely)) == ["broker"]
    dead = snapshot(broker=RABBITMQ, daemon_alive=False, workers=(), broker_status={**queue, "task_subscribers": 0})
    assert (
        problems(diagnose(dead)) == ["daemon"]
        and "3 task(s) wait in the queue, 0 consumer(s)" in diagnose(dead)[-1].message
    )
    down = snapshot(broker=RABBITMQ, broker_reachable=False, broker_status=None)
    (finding,) = [finding for finding in diagnose(down) if not finding.ok]
    assert finding.check == "broker" and not finding.fixable and "start the service" in finding.message


def test_a_profile_without_broker_has_nothing_to_check():
    assert is_healthy(diagnose(DaemonSnapshot("p", None, T0)))


def test_a_broker_pid_file_counts_only_for_a_live_broker_of_that_folder(tmp_path):
    (tmp_path / "broker.pid").write_text(f"aiida-zeromq-broker {os.getpid()}")
    assert _broker_pid(tmp_path) == os.getpid()
    assert not _is_broker_of(os.getpid(), tmp_path)  # a live process, but not a broker (PIDs are reused)
    (tmp_path / "broker.pid").write_text("garbage")
    assert _broker_pid(tmp_path) is None and not _is_broker_of(None, tmp_path)


def test_only_the_files_of_a_dead_broker_are_cleared_and_its_queue_stays(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from aiida_pyacemaker.setup import daemon_health

    service, sockets = tmp_path / "broker", tmp_path / "aiida_zeromq_dead"
    (service / "storage" / "tasks" / "pending").mkdir(parents=True)
    (service / "storage" / "tasks" / "pending" / "1_task.json").write_text("{}")
    sockets.mkdir()
    (sockets / "router.sock").write_text("")
    (service / "broker.sockets").write_text(str(sockets))
    (service / "broker.status").write_text("{}")
    monkeypatch.setattr(daemon_health, "broker_service_dir", lambda profile: service)
    profile = SimpleNamespace(process_control_backend=ZEROMQ)

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(service)])
    try:
        (service / "broker.pid").write_text(f"aiida-zeromq-broker {alive.pid}")
        deadline = time.monotonic() + 10
        while not _is_broker_of(alive.pid, service) and time.monotonic() < deadline:  # until it has exec'd
            time.sleep(0.05)
        assert daemon_health.clear_stale_broker_files(profile) == []  # a live broker of this folder owns them
    finally:
        alive.kill()
        alive.wait()
    removed = daemon_health.clear_stale_broker_files(profile)
    assert sorted(path.name for path in removed) == ["broker.pid", "broker.sockets", "broker.status"]
    assert not sockets.exists() and not (service / "broker.pid").exists()
    assert (service / "storage" / "tasks" / "pending" / "1_task.json").exists()


def test_the_command_is_registered_and_explains_itself():
    from click.testing import CliRunner

    from aiida_pyacemaker.cli import cli

    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "--fix / --no-fix" in result.output and "--profile" in result.output and "--workers" in result.output
    unknown = CliRunner().invoke(cli, ["doctor", "--profile", "no-such-profile-0f3a"])
    assert (
        unknown.exit_code == 1 and "no profile to check" in unknown.output and "no-such-profile-0f3a" in unknown.output
    )


# --- The real thing: kill -9 while pw.x runs, recover as documented -------------------------------------------------


class PwWatcher(threading.Thread):
    """Every pw.x process seen, by working directory: ``{cwd: {(pid, start time)}}`` (polled every 0.2 s)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, set[tuple[int, float]]] = collections.defaultdict(set)  # keys: real paths
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            for process in psutil.process_iter(["name", "cwd", "create_time"]):
                if process.info["name"] == "pw.x" and process.info["cwd"]:
                    self.seen[process.info["cwd"]].add((process.pid, process.info["create_time"]))
            time.sleep(0.2)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def rattled_cells(seed: int) -> list:
    """Cells the tiny committee is unsure about (u ~ 0.7 eV/A at a 0.25 A rattle): pw.x labels all of them."""
    from ase.build import bulk

    cells = []
    for index in range(ROWS):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.positions += np.random.default_rng(seed + index).normal(scale=0.25, size=atoms.positions.shape)
        cells.append(atoms)
    return cells


def oracle_builder(mace_code, models: dict, pw_code, pseudo_family: str):
    """All ``ROWS`` cells to DFT (thresholds far below their uncertainty), two pw.x at a time; fresh cells, no cache."""
    from aiida import orm

    from aiida_pyacemaker.data import StructureSetData
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    cells = rattled_cells(secrets.randbelow(10**6) * 10)
    overrides = {
        "uncertainty_threshold": 0.01,
        "threshold_call_dft": 0.02,
        "max_dft_calls": ROWS,
        "max_concurrent_dft": 2,
        "calibration_size": 0,  # thresholds on the raw spread: every row straight to DFT
        "meta_parameters": {"pseudo_family": pseudo_family},
    }
    builder = TieredOracleWorkChain.get_builder_from_protocol(
        mace_code, models, pw_code, orm.StructureData(ase=cells[0]), "fast", overrides
    )
    builder.structures = StructureSetData.from_atoms(cells).store()
    return builder


def workdir(calc) -> str | None:
    """The CalcJob's remote work directory as the kernel names it (the watcher's key)."""
    path = calc.get_remote_workdir()
    return os.path.realpath(path) if path else None


def pw_calculations(node) -> list:
    from aiida_quantumespresso.calculations.pw import PwCalculation

    return sorted((n for n in node.called_descendants if n.process_class is PwCalculation), key=lambda n: n.pk)


def doctor(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``aiida-pyacemaker doctor ARGS`` as a user runs it (same AIIDA_PATH as this process)."""
    executable = shutil.which("aiida-pyacemaker") or str(pathlib.Path(sys.executable).parent / "aiida-pyacemaker")
    return subprocess.run([executable, "doctor", *args], capture_output=True, text=True, timeout=timeout)


def sigkill_daemon(client) -> list[str]:
    """``kill -9`` the circus daemon, its direct children (workers, stats) and the profile's ZeroMQ broker.

    A real profile's broker is a child of the daemon; aiida-core's pytest fixtures run the test profile's broker
    beside it (``run_aiida_broker_service``), so it is found through its PID file. Jobs the workers launched (pw.x,
    in sessions of their own) live on, as they do when only the daemon dies.
    """
    import psutil

    pid = client.get_daemon_pid()
    assert pid is not None, "the daemon is not running"
    circus = psutil.Process(pid)
    assert any(name in circus.cmdline() for name in ("start-circus", "circusd")), circus.cmdline()
    victims = [circus, *circus.children()]
    if client.profile.process_control_backend == ZEROMQ:
        service_dir = broker_service_dir(client.profile)
        broker = _broker_pid(service_dir)
        if _is_broker_of(broker, service_dir) and broker not in {process.pid for process in victims}:
            victims.append(psutil.Process(broker))
    names = [f"{process.pid} {' '.join(process.cmdline()[1:6])}" for process in victims]
    for process in victims:
        process.kill()
    psutil.wait_procs(victims, timeout=30)
    return names


@dataclass
class Outcome:
    """What happened around the crash, for the assertions and the report."""

    running_at_kill: dict[int, str] = field(default_factory=dict)  # PwCalculation pk -> job id
    killed: list[str] = field(default_factory=list)
    pw_alive_after_kill: bool = False
    diagnosis: str = ""
    diagnosis_rc: int = -1
    fix: str = ""
    fix_rc: int = -1
    seconds: dict[str, float] = field(default_factory=dict)


def crash_and_recover(node, client, profile_name: str, watcher: PwWatcher, timeout: float = 1800) -> Outcome:
    """Wait for pw.x to run under ``node``, SIGKILL the daemon, run ``doctor`` then ``doctor --fix``, await the end.

    The kill comes while pw.x runs and no submission is in flight: every active PwCalculation has its job id and its
    pw.x process. (A job that the scheduler started but whose id AiiDA had not yet recorded is submitted again after
    any restart; ``doctor`` warns about such CalcJobs. Measured: the first version of this test, which killed at the
    first pw.x seen, caught the second PwCalculation in that window once and its pw.x ran twice.)
    """
    from aiida import orm

    outcome = Outcome()
    start = time.monotonic()
    while True:
        active = [calc for calc in pw_calculations(node) if not calc.is_terminated]
        running = {
            calc.pk: calc.get_job_id() for calc in active if calc.get_job_id() and watcher.seen.get(workdir(calc) or "")
        }
        if running and len(running) == len(active):
            break
        assert not node.is_terminated, f"the oracle ended before pw.x ran: {node.process_state} {node.exit_message}"
        assert time.monotonic() - start < 900, "no pw.x started within 900 s"
        time.sleep(0.5)
    outcome.seconds["submit_to_pw_running"] = time.monotonic() - start
    outcome.running_at_kill = running
    pw_before = {pid for pk in running for pid, _ in watcher.seen[workdir(orm.load_node(pk))]}
    outcome.killed = sigkill_daemon(client)
    killed_at = time.monotonic()
    outcome.pw_alive_after_kill = any(_alive(pid) for pid in pw_before)

    diagnosis = doctor("--profile", profile_name)
    outcome.diagnosis, outcome.diagnosis_rc = diagnosis.stdout + diagnosis.stderr, diagnosis.returncode
    fixed = doctor("--profile", profile_name, "--fix")
    outcome.fix, outcome.fix_rc = fixed.stdout + fixed.stderr, fixed.returncode
    outcome.seconds["kill_to_recovered"] = time.monotonic() - killed_at
    while not node.is_terminated:
        assert time.monotonic() - killed_at < timeout, f"the oracle did not finish within {timeout} s of the kill"
        time.sleep(1.0)
    outcome.seconds["kill_to_finished"] = time.monotonic() - killed_at
    return outcome


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def check_nothing_lost_or_repeated(node, outcome: Outcome, watcher: PwWatcher) -> None:
    """The oracle finished, every row has its DFT label, and every pw.x ran exactly once."""
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    report = f"{outcome}\nbefore --fix:\n{outcome.diagnosis}\n--fix:\n{outcome.fix}"
    assert outcome.pw_alive_after_kill, "the kill took pw.x with it: this test is about the daemon alone"
    assert outcome.diagnosis_rc == 1 and "not a running daemon" in outcome.diagnosis, report
    assert outcome.fix_rc == 0 and "Recovered in" in outcome.fix, report
    assert node.is_finished_ok, f"{node.process_state} {node.exit_status} {node.exit_message}\n{report}"

    assert node.outputs.routing.get_array("route").tolist() == ["dft"] * ROWS
    labelled = node.outputs.labelled
    assert labelled.get_array("source").tolist() == ["dft"] * ROWS, "a row was lost"
    assert np.isfinite(labelled.get_array("energy")).all()

    dft_runs = [n for n in node.called if n.process_class is PwBaseWorkChain]
    assert len(dft_runs) == ROWS and all(run.is_finished_ok for run in dft_runs)
    calculations = pw_calculations(node)
    assert len(calculations) == ROWS, "a PwBaseWorkChain ran pw.x more than once"
    assert all(calc.is_finished_ok and not calc.base.caching.is_created_from_cache for calc in calculations)
    assert sorted(labelled.get_array("producer_uuids").tolist()) == sorted(calc.uuid for calc in calculations)
    job_ids = [calc.get_job_id() for calc in calculations]
    assert len(set(job_ids)) == ROWS
    for pk, job_id in outcome.running_at_kill.items():
        assert job_ids[[calc.pk for calc in calculations].index(pk)] == job_id, "a running job was submitted again"
    for calc in calculations:
        runs = watcher.seen.get(workdir(calc) or "", set())
        assert len(runs) == 1, f"pw.x ran {len(runs)} times in {workdir(calc)}: {sorted(runs)}"


def play(tmp_path: pathlib.Path, scenario: str, *setup_options: str) -> str:
    """Set up a throw-away profile as a user does (``aiida-pyacemaker setup``), play ``scenario`` on it, remove it.

    The scenario runs in its own Python (``python -m tests.cli.test_doctor``), never on the pytest session's profile:
    there aiida-core's fixtures run the ZeroMQ broker beside the daemon instead of under it, and a broker that
    restarts listens on a new socket that this pytest process, already connected to the old one, would not follow
    (its later submissions would stay ``created``; measured on aiida-core 2.9).
    """
    profile = f"doctor-{secrets.token_hex(4)}"
    env = dict(os.environ, AIIDA_PATH=str(tmp_path), AIIDA_WARN_v3="0")
    executable = shutil.which("aiida-pyacemaker") or str(pathlib.Path(sys.executable).parent / "aiida-pyacemaker")
    verdi = [sys.executable, "-m", "aiida", "-p", profile]
    try:
        setup = [executable, "setup", "--profile", profile, "--no-install-qe", *setup_options]
        created = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=900)
        assert created.returncode == 0, created.stdout + created.stderr
        silence = [*verdi, "config", "set", "warnings.rabbitmq_version", "False"]
        subprocess.run(silence, env=env, capture_output=True, timeout=300)
        command = [sys.executable, "-m", "tests.cli.test_doctor", "--profile", profile, "--scenario", scenario]
        played = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=2400)
        print(played.stdout[-8000:])
        assert played.returncode == 0, played.stdout[-8000:] + played.stderr[-8000:]
        return played.stdout
    finally:
        subprocess.run([*verdi, "daemon", "stop"], env=env, capture_output=True, timeout=300)
        delete = [sys.executable, "-m", "aiida", "profile", "delete", "--force", "--delete-data", profile]
        subprocess.run(delete, env=env, capture_output=True, timeout=300)


def reachable(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.daemon
def test_sigkill_of_the_default_profile_daemon_during_pw_then_doctor_fix_loses_and_repeats_nothing(tmp_path):
    """SQLite + the ZeroMQ broker under the daemon, as ``aiida-pyacemaker setup`` makes the default profile."""
    output = play(tmp_path, "crash")
    assert "broker files: left by a broker that died" in output
    assert "nothing lost, nothing repeated" in output


@pytest.mark.slow
@pytest.mark.daemon
def test_doctor_fix_repairs_workers_left_on_a_dead_broker_socket(tmp_path):
    """After a broker-only death (deterministic) and after ``verdi daemon start`` following a daemon kill (a race)."""
    output = play(tmp_path, "stuck")
    assert "broker death: add_multiply finished" in output and "add_multiply finished: 20" in output


@pytest.mark.slow
@pytest.mark.daemon
@pytest.mark.production
def test_sigkill_of_the_production_profile_daemon_during_pw_then_doctor_fix(tmp_path):
    missing = [name for name, port in (("PostgreSQL", 5432), ("RabbitMQ", 5672)) if not reachable(port)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not listening on 127.0.0.1: the production profile cannot be tested")
    output = play(tmp_path, "crash", "--database", "postgresql", "--broker", "rabbitmq")
    assert "core.rabbitmq answers; " in output and "0 consumer(s)" in output
    assert "nothing lost, nothing repeated" in output


# --- The scenarios, run by ``play`` in their own Python on a profile made by ``aiida-pyacemaker setup`` -------------


def scenario_crash(profile: str) -> None:
    """A ``TieredOracleWorkChain`` sends ``ROWS`` cells to pw.x; kill -9 the daemon mid-run; ``doctor --fix``."""
    from aiida import orm
    from aiida.engine import submit
    from aiida.engine.daemon.client import get_daemon_client

    from aiida_pyacemaker.data import MaceModelData
    from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY

    client = get_daemon_client(profile)
    models_dir = ROOT / "models" / "tiny-si"
    models = {f"m{i}": MaceModelData.from_file(path) for i, path in enumerate(sorted(models_dir.glob("*_s*.model")))}
    assert len(models) == 3, f"the tiny committee is missing in {models_dir}"
    builder = oracle_builder(orm.load_code("mace@localhost"), models, orm.load_code("pw@localhost"), DEFAULT_FAMILY)
    watcher = PwWatcher()
    watcher.start()
    try:
        node = submit(builder)
        outcome = crash_and_recover(node, client, profile, watcher)
    finally:
        watcher.stop()
    print(outcome)
    print(f"before --fix:\n{outcome.diagnosis}\n--fix:\n{outcome.fix}")
    check_nothing_lost_or_repeated(node, outcome, watcher)
    print(f"{node.process_label}<{node.pk}>: {ROWS} rows, {ROWS} pw.x runs: nothing lost, nothing repeated")


def await_broker(service_dir: pathlib.Path, not_pid: int | None = None) -> None:
    """Until a broker (other than ``not_pid``) runs for ``service_dir``: it has then written its socket path."""
    deadline = time.monotonic() + 120
    while not _is_broker_of(_broker_pid(service_dir), service_dir) or _broker_pid(service_dir) == not_pid:
        assert time.monotonic() < deadline, "the broker did not start"
        time.sleep(0.5)


def await_end(node, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not node.is_terminated and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node.is_finished_ok, f"{node.process_state}"


def scenario_stuck(profile: str) -> None:
    """Two ways to strand the workers of a ZeroMQ profile, found and repaired by ``doctor --fix``.

    1. kill -9 of the broker alone: circus starts a new one on a new socket, the workers stay on the old one. A
       submitted work chain waits (measured here: still ``created`` 30 s later, 1 task pending, 0 subscribers).
    2. kill -9 of the whole daemon then ``verdi daemon start 2``: a race; either way ``doctor --fix`` ends healthy.
    """
    import psutil
    from aiida.engine import submit
    from aiida.engine.daemon.client import get_daemon_client
    from aiida.manage import get_manager, get_profile
    from aiida.orm import Int
    from aiida.plugins import WorkflowFactory

    add_multiply = WorkflowFactory("core.arithmetic.add_multiply")
    client = get_daemon_client(profile)
    service_dir = broker_service_dir(get_profile())
    await_broker(service_dir)
    old = _broker_pid(service_dir)
    assert old is not None
    psutil.Process(old).kill()
    await_broker(service_dir, not_pid=old)
    node = submit(add_multiply, x=Int(2), y=Int(3), z=Int(4))
    time.sleep(30)
    assert node.process_state.value == "created", f"the work chain moved without a subscriber: {node.process_state}"
    diagnosis = doctor("--profile", profile)
    print(diagnosis.stdout)
    assert diagnosis.returncode == 1 and "0 of 1 worker(s) subscribed; 1 task(s) pending" in diagnosis.stdout
    start = time.monotonic()
    fixed = doctor("--profile", profile, "--fix")
    print(fixed.stdout)
    assert fixed.returncode == 0 and "[fixed] stopped the daemon" in fixed.stdout, fixed.stdout + fixed.stderr
    await_end(node)
    print(f"broker death: add_multiply finished {time.monotonic() - start:.0f} s after `doctor --fix` started")

    print("killed:", sigkill_daemon(client))
    started = subprocess.run(
        [sys.executable, "-m", "aiida", "-p", profile, "daemon", "start", "2"], capture_output=True, timeout=300
    )
    assert started.returncode == 0, started.stdout + started.stderr
    await_broker(service_dir)
    get_manager().reset_runner()  # this process met the broker that was killed: reach the new one
    get_manager().reset_broker()
    node = submit(add_multiply, x=Int(2), y=Int(3), z=Int(4))
    diagnosis = doctor("--profile", profile)
    fixed = doctor("--profile", profile, "--fix")
    print(diagnosis.stdout, fixed.stdout, sep="\n")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    if diagnosis.returncode == 1:  # the race went the bad way: the stuck workers were found and replaced
        assert "subscribed" in diagnosis.stdout and "[fixed] stopped the daemon" in fixed.stdout
        print("the plain start had left workers unsubscribed; doctor replaced them")
    else:
        assert "2 of 2 worker(s) subscribed" in diagnosis.stdout and "Healthy" in fixed.stdout
        print("the plain start went well this time")
    await_end(node)
    final = doctor("--profile", profile)
    assert final.returncode == 0 and "2 of 2 worker(s) subscribed" in final.stdout, final.stdout
    print(f"add_multiply finished: {node.outputs.result.value}")


def main() -> None:
    """Play a scenario on an existing profile set up by ``aiida-pyacemaker setup`` (codes, pseudos, daemon)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--scenario", choices=("crash", "stuck"), default="crash")
    args = parser.parse_args()

    from aiida import load_profile
    from aiida.engine.daemon.client import get_daemon_client

    load_profile(args.profile)
    client = get_daemon_client(args.profile)
    if not client.is_daemon_running:
        client.start_daemon()
    {"crash": scenario_crash, "stuck": scenario_stuck}[args.scenario](args.profile)


if __name__ == "__main__":
    main()
