"""The whole set-up, step by step; every step is idempotent."""

from __future__ import annotations

from dataclasses import dataclass

from .caching import ensure_caching
from .codes import PLUGIN_CODES, ensure_code
from .daemon import ensure_daemon
from .profile import ensure_localhost, ensure_profile
from .pseudos import DEFAULT_FAMILY, ensure_pseudo_family
from .quantum_espresso import ensure_quantum_espresso
from .result import StepResult


@dataclass
class SetupOptions:
    """What ``aiida-pyacemaker setup`` should build or reuse."""

    profile: str = "pyacemaker"
    database: str = "sqlite"
    broker: str = "zeromq"
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    install_qe: bool = True
    pseudo_family: str = DEFAULT_FAMILY
    start_daemon: bool = True
    daemon_workers: int = 1


def run_setup(options: SetupOptions) -> list[StepResult]:
    """Run every step in order and return what each did."""
    results = [ensure_quantum_espresso(install=options.install_qe)]
    results.append(
        ensure_profile(options.profile, options.database, options.broker, options.postgres_host, options.postgres_port)
    )
    computer, computer_result = ensure_localhost()
    results.append(computer_result)
    results.extend(ensure_code(spec, computer) for spec in PLUGIN_CODES)
    results.append(ensure_pseudo_family(options.pseudo_family))
    results.append(ensure_caching(options.profile))
    if options.start_daemon and options.broker != "none":
        results.append(ensure_daemon(options.profile, options.daemon_workers))
    return results
