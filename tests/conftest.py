"""Shared fixtures: a SQLite + ZeroMQ test profile (daemon tests need no service), codes, pseudos, structures."""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Callable

import numpy as np
import pytest

pytest_plugins = ["aiida.tools.pytest_fixtures"]


@pytest.fixture(scope="session")
def aiida_profile(aiida_config, aiida_profile_factory):
    """The test profile: SQLite storage and the ZeroMQ broker, so that ``submit_and_await`` works offline."""
    from aiida.plugins import BrokerFactory

    broker_config = BrokerFactory("core.zeromq").get_default_config()
    with aiida_profile_factory(aiida_config, broker_backend="core.zeromq", broker_config=broker_config) as profile:
        # circus answers slowly on a busy 2-core machine: the default 2 s made stopping the daemon time out.
        aiida_config.set_option("daemon.timeout", 30, scope=profile.name)
        yield profile


@pytest.fixture
def pw_code(aiida_localhost):
    """The serial ``pw.x`` registered exactly as ``aiida-pyacemaker setup`` registers it."""
    from aiida import orm

    from aiida_pyacemaker.setup.codes import PW_CODE, ensure_code

    if shutil.which(PW_CODE.executable) is None:
        pytest.fail("pw.x is not installed: run scripts/install.sh (CI installs it)")
    ensure_code(PW_CODE, aiida_localhost)
    return orm.load_code(f"{PW_CODE.label}@{aiida_localhost.label}")


@pytest.fixture
def pseudo_family():
    """The offline PBE family from Debian's UPF files, installed as the setup command does."""
    from aiida import orm

    from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY, ensure_pseudo_family

    ensure_pseudo_family(DEFAULT_FAMILY)
    return orm.load_group(DEFAULT_FAMILY)


@pytest.fixture
def generate_structure() -> Callable:
    """Return a factory of small Si ``StructureData``: ``si2`` (displaced primitive) or ``si8`` (conventional)."""

    def factory(name: str = "si2", displacement: float = 0.05, seed: int = 0, a: float = 5.43):
        from aiida import orm
        from ase.build import bulk

        atoms = bulk("Si", "diamond", a=a, cubic=(name == "si8"))
        rng = np.random.default_rng(seed)
        atoms.positions += rng.normal(scale=displacement, size=atoms.positions.shape)
        return orm.StructureData(ase=atoms)

    return factory


TINY_SI = pathlib.Path(__file__).resolve().parent.parent / "models" / "tiny-si"
FOUNDATION = pathlib.Path(__file__).resolve().parent.parent / "models" / "si-foundation"


def plugin_code(name: str, computer):
    """The code ``name`` of ``aiida_pyacemaker.setup.codes`` on ``computer``, registered as the setup command does."""
    from aiida import orm

    from aiida_pyacemaker.setup import codes

    spec = getattr(codes, name)
    codes.ensure_code(spec, computer)
    return orm.load_code(f"{spec.label}@{computer.label}")


@pytest.fixture
def mace_code(aiida_localhost):
    """The Python that runs the committee script."""
    return plugin_code("MACE_CODE", aiida_localhost)


@pytest.fixture
def mace_train_code(aiida_localhost):
    return plugin_code("MACE_TRAIN_CODE", aiida_localhost)


@pytest.fixture
def tiny_committee() -> dict:
    """The committed three-model tiny Si committee as ``MaceModelData`` nodes (``models/tiny-si``)."""
    from aiida_pyacemaker.data import MaceModelData

    paths = sorted(TINY_SI.glob("mace_si_tiny_s*.model"))
    assert len(paths) == 3, f"tiny committee missing in {TINY_SI}: run scripts/build_tiny_committee.py"
    return {f"m{index}": MaceModelData.from_file(path) for index, path in enumerate(paths)}


@pytest.fixture
def foundation_model():
    """The committed foundation-class Si model (``models/si-foundation``): ONE MACE model, as a user brings."""
    from aiida_pyacemaker.data import MaceModelData

    path = FOUNDATION / "mace_si_foundation.model"
    assert path.is_file(), f"{path} missing: run scripts/build_foundation_model.py"
    return MaceModelData.from_file(path)


@pytest.fixture
def si_dft_set():
    """The pw.x-labelled Si data set the tiny committee was trained on, as ASE ``Atoms``."""
    from ase.io import read

    return read(TINY_SI / "si_dft.xyz", index=":")


@pytest.fixture
def si_test_set():
    """A held-out pw.x-labelled set drawn like the `fast` distillation pool (``si_test.xyz``), as ASE ``Atoms``."""
    from ase.io import read

    return read(TINY_SI / "si_test.xyz", index=":")


@pytest.fixture
def pacemaker_code(aiida_localhost):
    """The Python with python-ace that runs the fit driver."""
    return plugin_code("PACEMAKER_CODE", aiida_localhost)


# --- Offline fixtures in aiida-quantumespresso's style: CalcJob inputs, parsers and handlers, no program runs ---

FIXTURES = pathlib.Path(__file__).resolve().parent / "parsers" / "fixtures"


@pytest.fixture
def fixture_sandbox():
    """A temporary folder that a CalcJob's ``prepare_for_submission`` writes into."""
    from aiida.common.folders import SandboxFolder

    with SandboxFolder() as folder:
        yield folder


@pytest.fixture
def fixture_code(aiida_localhost):
    """Factory of an ``InstalledCode`` for a CalcJob entry point; its executable is never run."""

    def factory(entry_point_name: str):
        from aiida import orm

        label = f"offline-{entry_point_name}"
        try:
            return orm.load_code(f"{label}@{aiida_localhost.label}")
        except Exception:
            code = orm.InstalledCode(
                label=label,
                computer=aiida_localhost,
                filepath_executable="/usr/bin/env",
                default_calc_job_plugin=entry_point_name,
            )
            return code.store()

    return factory


@pytest.fixture
def generate_calc_job():
    """``prepare_for_submission`` of a CalcJob with ``inputs`` into ``folder``; returns the ``CalcInfo``."""

    def factory(folder, entry_point_name: str, inputs: dict):
        from aiida.engine.utils import instantiate_process
        from aiida.manage.manager import get_manager
        from aiida.plugins import CalculationFactory

        process = instantiate_process(get_manager().get_runner(), CalculationFactory(entry_point_name), **inputs)
        return process.prepare_for_submission(folder)

    return factory


def _flatten_inputs(inputs: dict, prefix: str = ""):
    for key, value in inputs.items():
        if key == "metadata":
            continue
        if isinstance(value, dict):
            yield from _flatten_inputs(value, f"{prefix}{key}__")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture
def generate_calc_job_node(fixture_localhost_computer):
    """A stored ``CalcJobNode`` with linked ``inputs`` and a ``retrieved`` folder from ``tests/parsers/fixtures``.

    ``fixture_name``: the folder ``fixtures/<entry point>/<fixture_name>`` (its files become the retrieved files);
    ``exit_status``: the scheduler's verdict set before parsing (e.g. 120 out of walltime), as the engine does.
    """

    def factory(
        entry_point_name: str,
        fixture_name: str | None = None,
        inputs: dict | None = None,
        exit_status: int | None = None,
        files: dict[str, bytes | str] | None = None,
        options: dict | None = None,
    ):
        from aiida import orm
        from aiida.common.links import LinkType
        from aiida.plugins.entry_point import format_entry_point_string

        node = orm.CalcJobNode(
            computer=fixture_localhost_computer,
            process_type=format_entry_point_string("aiida.calculations", entry_point_name),
        )
        node.set_option("resources", {"num_machines": 1, "num_mpiprocs_per_machine": 1})
        node.set_option("max_wallclock_seconds", 1800)
        for key, value in (options or {}).items():
            node.set_option(key, value)
        for label, value in _flatten_inputs(inputs or {}):
            if not value.is_stored:
                value.store()
            node.base.links.add_incoming(value, link_type=LinkType.INPUT_CALC, link_label=label)
        node.store()
        if exit_status is not None:
            node.set_exit_status(exit_status)

        retrieved = orm.FolderData()
        if fixture_name is not None:
            source = FIXTURES / entry_point_name.replace(".", "_") / fixture_name
            if not source.is_dir():
                raise FileNotFoundError(f"no parser fixture {source}")
            retrieved.base.repository.put_object_from_tree(str(source))
        for name, content in (files or {}).items():
            data = content.encode() if isinstance(content, str) else content
            import io

            retrieved.base.repository.put_object_from_filelike(io.BytesIO(data), name)
        retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label="retrieved")
        retrieved.store()
        remote = orm.RemoteData(computer=fixture_localhost_computer, remote_path="/tmp/pyacemaker-test-remote")
        remote.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label="remote_folder")
        remote.store()
        return node

    return factory


@pytest.fixture
def fixture_localhost_computer(aiida_localhost):
    return aiida_localhost


@pytest.fixture
def run_parser():
    """Run the parser of a ``CalcJobNode`` as the engine would; returns (outputs, calcfunction node)."""

    def factory(node, entry_point_name: str):
        from aiida.plugins import ParserFactory

        return ParserFactory(entry_point_name).parse_from_node(node, store_provenance=False)

    return factory


@pytest.fixture
def generate_workchain():
    """Instantiate a work chain with ``inputs`` (validated) without running it, for handler tests."""

    def factory(entry_point_name: str, inputs: dict):
        from aiida.engine.utils import instantiate_process
        from aiida.manage.manager import get_manager
        from aiida.plugins import WorkflowFactory

        return instantiate_process(get_manager().get_runner(), WorkflowFactory(entry_point_name), **inputs)

    return factory


@pytest.fixture
def failed_child(generate_calc_job_node):
    """A finished-failed CalcJobNode with ``exit_status`` for a handler; ``outputs`` are linked as created."""

    def factory(entry_point_name: str, exit_status: int, inputs: dict | None = None, outputs: dict | None = None):
        from aiida.common.links import LinkType
        from aiida.engine import ProcessState

        node = generate_calc_job_node(entry_point_name, inputs=inputs)
        for label, output in (outputs or {}).items():
            output.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label=label)
            output.store()
        node.set_process_state(ProcessState.FINISHED)
        node.set_exit_status(exit_status)
        return node

    return factory


@pytest.fixture
def finished_workflow():
    """A stored, finished ``WorkChainNode`` of ``process_class`` with ``exit_status`` and returned ``outputs``."""

    def factory(process_class, exit_status: int = 0, outputs: dict | None = None, exit_message: str | None = None):
        from aiida import orm
        from aiida.common.links import LinkType
        from aiida.engine import ProcessState

        node = orm.WorkChainNode(process_type=f"{process_class.__module__}.{process_class.__name__}")
        node.set_process_label(process_class.__name__)
        node.store()
        for label, output in (outputs or {}).items():
            output.store()
            output.base.links.add_incoming(node, link_type=LinkType.RETURN, link_label=label)
        node.set_process_state(ProcessState.FINISHED)
        node.set_exit_status(exit_status)
        if exit_message:
            node.set_exit_message(exit_message)
        return node

    return factory


SI_ACE_MD = pathlib.Path(__file__).resolve().parent / "data" / "si_ace_md"


@pytest.fixture
def si_ace_potential():
    """A small real Si ACE potential with its active set (20 functions, the fast pacemaker protocol on
    ``models/si-foundation/si_foundation_dft.xyz``): gamma works; shipped so quick tests can run MD for real."""
    from aiida_pyacemaker.data import AcePotentialData

    return AcePotentialData.from_files(
        SI_ACE_MD / "potential.yaml", SI_ACE_MD / "potential.yace", SI_ACE_MD / "potential.asi"
    )


@pytest.fixture
def ace_md_code(aiida_localhost):
    """``ace-md@localhost``: the Python with python-ace that runs MD with gamma."""
    return plugin_code("ACE_MD_CODE", aiida_localhost)


@pytest.fixture
def evaluate_code(aiida_localhost):
    """``evaluate@localhost``: the Python with python-ace and mace-torch that labels validation structures."""
    return plugin_code("EVALUATE_CODE", aiida_localhost)
