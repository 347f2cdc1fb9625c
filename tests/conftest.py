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


@pytest.fixture
def mace_code(aiida_localhost):
    """The Python that runs the committee script, registered as the setup command does."""
    from aiida import orm

    from aiida_pyacemaker.setup.codes import MACE_CODE, ensure_code

    ensure_code(MACE_CODE, aiida_localhost)
    return orm.load_code(f"{MACE_CODE.label}@{aiida_localhost.label}")


@pytest.fixture
def mace_train_code(aiida_localhost):
    from aiida import orm

    from aiida_pyacemaker.setup.codes import MACE_TRAIN_CODE, ensure_code

    ensure_code(MACE_TRAIN_CODE, aiida_localhost)
    return orm.load_code(f"{MACE_TRAIN_CODE.label}@{aiida_localhost.label}")


@pytest.fixture
def tiny_committee() -> dict:
    """The committed three-model tiny Si committee as ``MaceModelData`` nodes (``models/tiny-si``)."""
    from aiida_pyacemaker.data import MaceModelData

    paths = sorted(TINY_SI.glob("mace_si_tiny_s*.model"))
    assert len(paths) == 3, f"tiny committee missing in {TINY_SI}: run scripts/build_tiny_committee.py"
    return {f"m{index}": MaceModelData.from_file(path) for index, path in enumerate(paths)}


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
    """The Python with python-ace that runs the fit driver, registered as the setup command does."""
    from aiida import orm

    from aiida_pyacemaker.setup.codes import PACEMAKER_CODE, ensure_code

    ensure_code(PACEMAKER_CODE, aiida_localhost)
    return orm.load_code(f"{PACEMAKER_CODE.label}@{aiida_localhost.label}")
