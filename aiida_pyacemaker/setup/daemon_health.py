"""Is a profile's daemon able to run processes? Find out, and restart it cleanly if not (``aiida-pyacemaker doctor``).

The trap this guards against (measured on aiida-core 2.9, ZeroMQ broker): when the daemon dies uncleanly (``kill -9``,
OOM killer), its broker leaves ``broker.pid``, ``broker.sockets`` and ``broker.status`` behind. A plain
``verdi daemon start`` then races: a worker that reads ``broker.sockets`` before the new broker rewrites it connects
to the dead broker's socket and never subscribes, while ``verdi daemon status`` looks healthy. Processes wait for
ever. In 13 kill/start cycles on 2 busy cores, 9 left at least one of 2 workers unsubscribed (none in 2 later runs
on a quieter machine); with the stale files removed first, 5 of 5 started cleanly. A clean stop removes the files,
so a clean stop + start recovers. A broker killed alone strands the workers for good: circus starts a new broker on
a new socket and the workers stay connected to the old one.

:func:`diagnose` is pure (it judges a :class:`DaemonSnapshot`); :func:`take_snapshot` reads the live state through
aiida-core's public API (``DaemonClient``, the broker's ``probe_service_status``); :func:`recover` stops the daemon
cleanly, removes what a dead broker left behind, starts it and waits until every worker has subscribed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiida.engine.daemon.client import DaemonClient
    from aiida.manage.configuration.profile import Profile

ZEROMQ = "core.zeromq"
RABBITMQ = "core.rabbitmq"
#: A fresh worker subscribes to the broker within a few seconds; judge it only after this many seconds.
SUBSCRIBE_GRACE_S = 30.0
#: The ZeroMQ broker rewrites its status file every 5 s; older than this, the broker is not answering.
STATUS_MAX_AGE_S = 60.0
#: The files a ZeroMQ broker writes at start and removes at a clean stop (its task queue in ``storage/`` stays).
BROKER_STATE_FILES = ("broker.pid", "broker.sockets", "broker.status")


class RecoveryError(RuntimeError):
    """The daemon could not be brought back to a working state."""


@dataclass(frozen=True)
class Finding:
    """One check: ``ok`` False is a problem; ``fixable`` False means a restart of the daemon cannot help.

    A ``warning`` is ``ok`` (nothing to restart) but needs the user's eye.
    """

    check: str
    ok: bool
    message: str
    fixable: bool = True
    warning: bool = False

    def line(self) -> str:
        """One line for the terminal."""
        tag = "PROBLEM" if not self.ok else "warning" if self.warning else "ok"
        return f"[{tag}] {self.check}: {self.message}"


@dataclass(frozen=True)
class DaemonSnapshot:
    """What the daemon and broker of one profile look like at ``taken_at`` (seconds since the epoch).

    ``workers`` holds the start time of every daemon worker (empty when the daemon does not answer);
    ``broker_status`` is the ZeroMQ broker's own status file (``pending_tasks``, ``task_subscribers``, ``timestamp``);
    ``stale_broker_files`` are state files of a ZeroMQ broker whose process is gone; ``orphans`` are PIDs of workers
    or brokers of this profile that run outside the daemon; ``submitting`` holds ``(pk, remote work directory)`` of
    the active CalcJobs whose submission to the scheduler had started but whose job id was not yet recorded.
    """

    profile: str
    broker: str | None
    taken_at: float
    daemon_pid: int | None = None
    daemon_alive: bool = False
    daemon_started: float | None = None
    workers: tuple[float, ...] = ()
    broker_reachable: bool = False
    broker_status: Mapping[str, Any] | None = None
    stale_broker_files: tuple[str, ...] = ()
    orphans: tuple[int, ...] = ()
    active_processes: int = 0
    submitting: tuple[tuple[int, str], ...] = ()
    errors: tuple[str, ...] = field(default=())

    @property
    def daemon_running(self) -> bool:
        """The daemon's PID file names a live daemon."""
        return self.daemon_pid is not None and self.daemon_alive

    @property
    def subscribers(self) -> int | None:
        """Task subscribers the ZeroMQ broker counts (one per subscribed worker); None without a status."""
        if self.broker_status is None or "task_subscribers" not in self.broker_status:
            return None
        return int(self.broker_status["task_subscribers"])


def is_settled(snapshot: DaemonSnapshot) -> bool:
    """Whether a running daemon can be judged yet: a daemon, broker or worker that just started gets its grace time.

    Missing subscribers count only in a broker status written ``SUBSCRIBE_GRACE_S`` after the newest worker started.
    """
    if not snapshot.daemon_running:
        return True
    young = snapshot.daemon_started is not None and snapshot.taken_at - snapshot.daemon_started < SUBSCRIBE_GRACE_S
    if not snapshot.workers:
        return not young
    if not snapshot.broker_reachable or snapshot.broker_status is None:
        return not young
    subscribers = snapshot.subscribers
    if subscribers is not None and subscribers >= len(snapshot.workers):
        return True
    written = float(snapshot.broker_status.get("timestamp") or 0.0)
    return written >= max(snapshot.workers) + SUBSCRIBE_GRACE_S


def diagnose(snapshot: DaemonSnapshot) -> list[Finding]:
    """Every check on ``snapshot``, problems and passes alike."""
    if snapshot.broker is None:
        return [Finding("broker", True, f"profile `{snapshot.profile}` has no broker, hence no daemon to check")]
    findings = [Finding("storage", False, error, fixable=False) for error in snapshot.errors]
    waiting = snapshot.active_processes
    if snapshot.daemon_pid is not None and not snapshot.daemon_alive:
        findings.append(
            Finding(
                "daemon",
                False,
                f"the PID file names {snapshot.daemon_pid}, which is not a running daemon: it died without cleaning "
                f"up; {waiting} process(es) wait for it",
            )
        )
    elif not snapshot.daemon_running:
        findings.append(Finding("daemon", waiting == 0, f"not running; {waiting} process(es) wait for it"))
    elif not snapshot.workers:
        settled = is_settled(snapshot)
        message = f"running as PID {snapshot.daemon_pid} without any worker" + ("" if settled else " (starting)")
        findings.append(Finding("daemon", not settled, message))
    else:
        findings.append(
            Finding("daemon", True, f"running as PID {snapshot.daemon_pid} with {len(snapshot.workers)} worker(s)")
        )
    if snapshot.orphans:
        pids = ", ".join(str(pid) for pid in snapshot.orphans)
        findings.append(Finding("orphans", False, f"daemon processes of this profile outside the daemon: PID {pids}"))
    if snapshot.broker == ZEROMQ:
        findings.extend(_zeromq_findings(snapshot))
    elif not snapshot.broker_reachable:
        message = f"{snapshot.broker} does not answer: start the service first"
        findings.append(Finding("broker", False, message, fixable=False))
    elif snapshot.daemon_running and snapshot.broker_status:
        findings.append(_subscriber_finding(snapshot, "a restart connects them again"))
    elif snapshot.broker_status:
        status = snapshot.broker_status
        queue = f"{status.get('pending_tasks')} task(s) wait in the queue, {status.get('task_subscribers')} consumer(s)"
        findings.append(Finding("broker", True, f"{snapshot.broker} answers; {queue}"))
    else:
        findings.append(Finding("broker", True, f"{snapshot.broker} answers; {waiting} active process(es)"))
    if snapshot.submitting and not is_healthy(findings):
        findings.append(_interrupted_submissions(snapshot.submitting))
    return findings


def _interrupted_submissions(submitting: Sequence[tuple[int, str]]) -> Finding:
    """CalcJobs caught between the scheduler's submit and the recorded job id: AiiDA submits them again."""
    jobs = "; ".join(f"CalcJob<{pk}> in {workdir}" for pk, workdir in submitting)
    return Finding(
        "submissions",
        True,
        f"{len(submitting)} CalcJob(s) were being submitted when the daemon stopped working: {jobs}. AiiDA submits "
        "them again; if the first job had already started, it runs twice in the same folder: look for it with your "
        "scheduler (squeue, ps) and cancel the older one",
        warning=True,
    )


def _zeromq_findings(snapshot: DaemonSnapshot) -> list[Finding]:
    findings = []
    if snapshot.stale_broker_files:
        names = ", ".join(Path(path).name for path in snapshot.stale_broker_files)
        findings.append(
            Finding(
                "broker files",
                False,
                f"left by a broker that died ({names}): a plain `verdi daemon start` may connect workers to the dead "
                "broker's socket, where they never receive a task",
            )
        )
    if not snapshot.daemon_running:
        return findings
    status = snapshot.broker_status or {}
    if not snapshot.broker_reachable or not status:
        if is_settled(snapshot):
            findings.append(Finding("broker", False, "the daemon runs but its ZeroMQ broker does not"))
        else:
            findings.append(Finding("broker", True, "the daemon has just started: its broker is starting"))
        return findings
    age = snapshot.taken_at - float(status.get("timestamp") or 0.0)
    if age > STATUS_MAX_AGE_S:
        findings.append(Finding("broker", False, f"the broker has not written its status for {age:.0f} s"))
        return findings
    findings.append(_subscriber_finding(snapshot, "they connected to a dead broker's socket"))
    return findings


def _subscriber_finding(snapshot: DaemonSnapshot, cause: str) -> Finding:
    """Every worker of a running daemon takes tasks from the broker (after its grace time)."""
    status = snapshot.broker_status or {}
    subscribers, workers = snapshot.subscribers or 0, len(snapshot.workers)
    pending = status.get("pending_tasks", "?")
    counts = f"{subscribers} of {workers} worker(s) subscribed; {pending} task(s) pending"
    if "processing_tasks" in status:
        counts += f", {status['processing_tasks']} processing"
    if subscribers >= workers:
        return Finding("broker", True, counts)
    if not is_settled(snapshot):
        return Finding("broker", True, f"{counts} (workers still starting)")
    return Finding("broker", False, f"{counts}: the unsubscribed workers never receive a task ({cause})")


def is_healthy(findings: Sequence[Finding]) -> bool:
    """No check failed."""
    return all(finding.ok for finding in findings)


# --- Reading the live state -----------------------------------------------------------------------------------------


def _is_circus(pid: int) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(name in cmdline for name in ("start-circus", "circusd"))


def broker_service_dir(profile: Profile) -> Path:
    """The folder where the ZeroMQ broker of ``profile`` keeps its state files and task queue."""
    from aiida.manage.configuration import get_config

    return Path(get_config().filepaths(profile)["broker_service"]["dir"])


def _broker_pid(service_dir: Path) -> int | None:
    try:
        return int((service_dir / "broker.pid").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _is_broker_of(pid: int | None, service_dir: Path) -> bool:
    """A live process with this PID runs the broker of ``service_dir`` (PIDs are reused after a crash)."""
    import psutil

    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and str(service_dir) in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stale_broker_files(profile: Profile) -> list[Path]:
    """State files of the ZeroMQ broker of ``profile`` when no live broker owns them."""
    if profile.process_control_backend != ZEROMQ:
        return []
    service_dir = broker_service_dir(profile)
    if _is_broker_of(_broker_pid(service_dir), service_dir):
        return []
    return [service_dir / name for name in BROKER_STATE_FILES if (service_dir / name).exists()]


def _orphans(profile: Profile, daemon_pid: int | None) -> tuple[int, ...]:
    """Workers and brokers started for this profile and configuration whose daemon is not their parent."""
    import psutil
    from aiida.manage.configuration import get_config

    config_dir = str(get_config().dirpath)
    found = []
    for process in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        try:
            index = cmdline.index("daemon")
        except ValueError:
            continue
        if cmdline[index + 1 : index + 2] not in (["worker"], ["broker"]):
            continue
        if profile.name not in cmdline[:index] or process.info["ppid"] == daemon_pid:
            continue
        try:
            if process.environ().get("AIIDA_PATH", config_dir) != config_dir:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found.append(process.info["pid"])
    return tuple(sorted(found))


def take_snapshot(profile: Profile) -> DaemonSnapshot:
    """Read the daemon, the broker and the active processes of ``profile`` (which must be the loaded profile)."""
    from aiida.engine.daemon.client import DaemonException, get_daemon_client

    broker_name = profile.process_control_backend
    now = time.time()
    if broker_name is None:
        return DaemonSnapshot(profile.name, None, now)
    client = get_daemon_client(profile.name)
    daemon_pid = client.get_daemon_pid()
    alive = daemon_pid is not None and _is_circus(daemon_pid)
    workers: tuple[float, ...] = ()
    started = None
    if alive:
        try:
            started = float(client.get_daemon_info()["info"]["create_time"])
            info = client.get_worker_info().get("info", {})
            workers = tuple(float(worker["create_time"]) for worker in info.values() if isinstance(worker, dict))
        except (DaemonException, KeyError, TypeError, ValueError):
            workers = ()
    errors = []
    submitting: list[tuple[int, str]] = []
    try:
        from aiida.engine.processes.control import get_active_processes

        active = len(get_active_processes(project="id"))
        submitting = _submitting_calcjobs()
    except Exception as exception:  # the storage service (PostgreSQL) may be down
        active, errors = 0, [f"cannot count the active processes: {exception}"]
    reachable, status = _probe_broker(profile, broker_name)
    return DaemonSnapshot(
        profile=profile.name,
        broker=broker_name,
        taken_at=time.time(),
        daemon_pid=daemon_pid,
        daemon_alive=alive,
        daemon_started=started,
        workers=workers,
        broker_reachable=reachable,
        broker_status=status,
        stale_broker_files=tuple(str(path) for path in stale_broker_files(profile)),
        orphans=_orphans(profile, daemon_pid if alive else None),
        active_processes=active,
        submitting=tuple(submitting),
        errors=tuple(errors),
    )


def _submitting_calcjobs() -> list[tuple[int, str]]:
    """Active CalcJobs in the ``submitting`` state: the scheduler may have started their job already."""
    from aiida.common.datastructures import CalcJobState
    from aiida.orm import CalcJobNode, QueryBuilder

    query = QueryBuilder().append(
        CalcJobNode,
        filters={
            "attributes.process_state": {"in": ["created", "waiting", "running"]},
            f"attributes.{CalcJobNode.CALC_JOB_STATE_KEY}": CalcJobState.SUBMITTING.value,
        },
        project=["id", f"attributes.{CalcJobNode.REMOTE_WORKDIR_KEY}"],
    )
    return sorted((int(pk), str(workdir)) for pk, workdir in query.all())


def _probe_broker(profile: Profile, broker_name: str) -> tuple[bool, Mapping[str, Any] | None]:
    """Whether the broker answers, and its counts of waiting tasks and subscribed workers.

    ZeroMQ: the status file the broker writes, read through aiida-core's ``Broker.probe_service_status`` (no parsing
    of ``verdi daemon status``). RabbitMQ: a passive declaration of the profile's launch queue, which returns its
    ready messages and consumers.
    """
    from aiida.plugins import BrokerFactory

    broker = BrokerFactory(broker_name)(profile)
    try:
        from aiida.brokers.rabbitmq.broker import RabbitmqBroker

        if isinstance(broker, RabbitmqBroker):
            try:
                ready, consumers = _rabbitmq_launch_queue(profile, broker.get_url())
            except Exception:
                return broker.check_service_reachable(), None
            return True, {"pending_tasks": ready, "task_subscribers": consumers, "timestamp": time.time()}
        if broker_name != ZEROMQ:
            return broker.check_service_reachable(), None
        service_dir = broker_service_dir(profile)
        if not _is_broker_of(_broker_pid(service_dir), service_dir):
            return False, None
        status = broker.probe_service_status()
        return True, None if status.get("error") else dict(status)
    finally:
        broker.close()


def _rabbitmq_launch_queue(profile: Profile, url: str, timeout: float = 20.0) -> tuple[int, int]:
    """(ready tasks, consumers) of the profile's process launch queue (RabbitMQ), by a passive queue declaration."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import aiormq
    from aiida.brokers.rabbitmq.utils import get_launch_queue_name

    queue = get_launch_queue_name(f"aiida-{profile.uuid}")  # the prefix aiida-core's RabbitmqBroker uses

    async def declare() -> tuple[int, int]:
        connection = await aiormq.connect(url)
        try:
            channel = await connection.channel()
            declared = await channel.queue_declare(queue, passive=True)
            return int(declared.message_count or 0), int(declared.consumer_count or 0)
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:  # its own event loop, whatever runs in this thread
        return pool.submit(asyncio.run, asyncio.wait_for(declare(), timeout)).result()


def check(profile: Profile, wait: float = 2 * SUBSCRIBE_GRACE_S) -> tuple[DaemonSnapshot, list[Finding]]:
    """Snapshot and findings; while fresh workers may still be subscribing, look again for up to ``wait`` s."""
    deadline = time.monotonic() + wait
    snapshot = take_snapshot(profile)
    while not is_settled(snapshot) and time.monotonic() < deadline:
        time.sleep(2.0)
        snapshot = take_snapshot(profile)
    return snapshot, diagnose(snapshot)


# --- Recovery -------------------------------------------------------------------------------------------------------


def _stop(client: DaemonClient, actions: list[str]) -> None:
    from aiida.engine.daemon.client import DaemonException, DaemonNotRunningException

    pid = client.get_daemon_pid()
    if pid is None:
        return
    if not _is_circus(pid):
        Path(client.circus_pid_file).unlink(missing_ok=True)
        actions.append(f"removed the daemon's stale PID file (PID {pid} is gone)")
        return
    try:
        client.stop_daemon(wait=True)
    except DaemonNotRunningException:
        pass
    except DaemonException as exception:
        # On a loaded machine circus may not answer its control socket in time (measured under a CI run beside
        # two benchmarks: "Connection to the daemon timed out"): ask it by signal, as `kill` would, and wait.
        import os
        import signal

        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        actions.append(f"the daemon did not answer `stop` ({exception}): sent it SIGTERM (PID {pid})")
    deadline = time.monotonic() + 60
    while _is_circus(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _is_circus(pid):
        raise RecoveryError(f"the daemon (PID {pid}) is still running 60 s after `stop`")
    actions.append(f"stopped the daemon (PID {pid}) cleanly")


def _end_orphans(pids: Sequence[int], actions: list[str]) -> None:
    """SIGTERM (a worker then shuts down gracefully), SIGKILL after 30 s."""
    import psutil

    processes = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            process.terminate()
            processes.append(process)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=30)
    for process in alive:
        process.kill()
    if processes:
        actions.append(f"ended daemon processes left outside the daemon: PID {', '.join(str(p) for p in pids)}")


def clear_stale_broker_files(profile: Profile) -> list[Path]:
    """Remove the state files and socket folder of a dead ZeroMQ broker, as its clean stop would; its queue stays."""
    import shutil

    removed = stale_broker_files(profile)
    for path in removed:
        if path.name == "broker.sockets":
            try:
                sockets = Path(path.read_text().strip())
            except OSError:
                sockets = None
            if sockets is not None and sockets.name.startswith("aiida_zeromq_") and sockets.is_dir():
                shutil.rmtree(sockets, ignore_errors=True)
        path.unlink(missing_ok=True)
    return removed


def default_workers(profile: Profile) -> int:
    """The profile's ``daemon.default_workers`` (what ``verdi daemon start`` without a number uses)."""
    from aiida.manage.configuration import get_config

    return int(get_config().get_option("daemon.default_workers", scope=profile.name))


def restart_cleanly(profile: Profile, workers: int) -> list[str]:
    """Stop the daemon cleanly (or clear its stale PID file), end orphans, clear a dead broker's files, start it."""
    from aiida.engine.daemon.client import DaemonException, get_daemon_client

    client = get_daemon_client(profile.name)
    actions: list[str] = []
    _stop(client, actions)
    daemon_pid = client.get_daemon_pid()
    _end_orphans(_orphans(profile, daemon_pid if daemon_pid and _is_circus(daemon_pid) else None), actions)
    removed = clear_stale_broker_files(profile)
    if removed:
        actions.append(f"removed the files of the dead broker: {', '.join(path.name for path in removed)}")
    try:
        client.start_daemon(number_workers=workers)
    except DaemonException as exception:
        raise RecoveryError(f"the daemon did not start: {exception}") from exception
    actions.append(f"started the daemon with {workers} worker(s)")
    return actions


def recover(
    profile: Profile, workers: int | None = None, timeout: float = 180.0, attempts: int = 2
) -> tuple[list[str], list[Finding]]:
    """Restart the daemon cleanly until every check passes (``attempts`` restarts at most).

    Returns what was done and the final findings; raises :class:`RecoveryError` when the daemon does not recover or a
    problem cannot be fixed by a restart (a broker service or database that does not answer).
    """
    snapshot = take_snapshot(profile)
    blocking = [finding for finding in diagnose(snapshot) if not finding.ok and not finding.fixable]
    if blocking:
        raise RecoveryError("; ".join(finding.message for finding in blocking))
    count = workers or len(snapshot.workers) or default_workers(profile)
    actions: list[str] = []
    findings: list[Finding] = []
    for _ in range(attempts):
        actions.extend(restart_cleanly(profile, count))
        deadline = time.monotonic() + timeout
        while True:
            snapshot, findings = check(profile, wait=min(timeout, 2 * SUBSCRIBE_GRACE_S))
            if is_healthy(findings) and len(snapshot.workers) >= count and _subscribed(snapshot, count):
                return actions, findings
            if time.monotonic() > deadline or not is_healthy(findings):
                break
            time.sleep(2.0)
    problems = "; ".join(finding.message for finding in findings if not finding.ok) or "workers did not subscribe"
    raise RecoveryError(f"still not working after {attempts} clean restart(s): {problems}")


def _subscribed(snapshot: DaemonSnapshot, workers: int) -> bool:
    """Every worker has subscribed to the broker (without counts from the broker: it answers)."""
    if snapshot.subscribers is None:
        return snapshot.broker_reachable
    return snapshot.subscribers >= workers
