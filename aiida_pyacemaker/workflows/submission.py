"""Submit to the daemon and wait, with a clear message when no daemon is running."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiida.engine import ProcessBuilder
    from aiida.orm import ProcessNode


class DaemonNotRunningError(RuntimeError):
    """The profile's daemon is not running, so a submitted process would never start."""


def submit_and_wait(builder: ProcessBuilder, timeout: float = 1800.0, poll: float = 1.0) -> ProcessNode:
    """Submit ``builder`` to the daemon of the loaded profile and block until the process terminates."""
    from aiida.engine import submit
    from aiida.engine.daemon.client import get_daemon_client

    if not get_daemon_client().is_daemon_running:
        raise DaemonNotRunningError("the daemon is not running: start it with `verdi daemon start`.")
    node = submit(builder)
    deadline = time.monotonic() + timeout
    while not node.is_terminated:
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {node.pk} did not finish within {timeout:.0f} s; it keeps running.")
        time.sleep(poll)
    return node
