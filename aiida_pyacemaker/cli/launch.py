"""Submit to the daemon and wait, with a clear message when no daemon is running, streaming the reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiida.engine import ProcessBuilder
    from aiida.orm import ProcessNode


class DaemonNotRunningError(RuntimeError):
    """The profile's daemon is not running, so a submitted process would never start."""


def new_report_lines(node: ProcessNode, after: int) -> tuple[list[str], int]:
    """The report lines of ``node`` and every process below it with a log id above ``after``, oldest first,
    as ``Label<pk>: message`` (what ``verdi process report`` shows); and the last id seen."""
    from aiida import orm

    pks = [node.pk, *(descendant.pk for descendant in node.called_descendants)]
    query = orm.QueryBuilder().append(
        orm.Log,
        filters={"dbnode_id": {"in": pks}, "levelname": "REPORT", "id": {">": after}},
        project=["id", "dbnode_id", "message"],
    )
    query.order_by({orm.Log: {"id": "asc"}})
    labels: dict[int, str] = {}
    lines = []
    last = after
    for log_id, pk, message in query.iterall():
        if pk not in labels:
            labels[pk] = f"{orm.load_node(pk).process_label}<{pk}>"
        lines.append(f"{labels[pk]}: {message}")
        last = max(last, log_id)
    return lines, last


def submit_and_wait(
    builder: ProcessBuilder,
    timeout: float = 1800.0,
    poll: float = 2.0,
    echo: Callable[[str], None] | None = None,
) -> ProcessNode:
    """Submit ``builder`` to the daemon of the loaded profile and block until the process terminates.

    With ``echo``, every report line of the process and its children is passed to it as it appears, prefixed with
    the elapsed time (``[mm:ss]``), like ``verdi process watch``.
    """
    from aiida.engine import submit
    from aiida.engine.daemon.client import get_daemon_client

    if not get_daemon_client().is_daemon_running:
        raise DaemonNotRunningError("the daemon is not running: start it with `verdi daemon start`.")
    node = submit(builder)
    start = time.monotonic()
    deadline = start + timeout
    last_log = 0

    def stream() -> None:
        nonlocal last_log
        if echo is None:
            return
        lines, last_log = new_report_lines(node, last_log)
        elapsed = int(time.monotonic() - start)
        for line in lines:
            echo(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {line}")

    if echo is not None:
        echo(f"submitted {node.process_label}<{node.pk}>; its reports follow (Ctrl-C stops waiting, not the process)")
    while not node.is_terminated:
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {node.pk} did not finish within {timeout:.0f} s; it keeps running.")
        stream()
        time.sleep(poll)
    stream()
    return node
