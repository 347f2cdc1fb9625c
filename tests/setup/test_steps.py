"""Unit tests of the set-up steps inside the test profile."""

from __future__ import annotations

import pytest

from aiida_pyacemaker.setup.codes import PW_CODE, CodeSpec, ensure_code
from aiida_pyacemaker.setup.profile import _presto_command, ensure_profile
from aiida_pyacemaker.setup.pseudos import (
    DEBIAN_PBE_FILES,
    DEBIAN_PSEUDO_DIR,
    DEFAULT_FAMILY,
    ensure_pseudo_family,
    family_cutoffs,
    suggested_cutoffs,
)
from aiida_pyacemaker.setup.quantum_espresso import SetupError, ensure_quantum_espresso


def test_suggested_cutoffs_read_from_the_upf_file():
    wfc, rho = suggested_cutoffs(DEBIAN_PSEUDO_DIR / DEBIAN_PBE_FILES["Si"])
    # The file suggests 44 Ry / 175 Ry: rounded up to 45 Ry, and ecutrho raised to 8 x ecutwfc.
    assert (wfc, rho) == (45.0, 360.0)


def test_family_cutoffs_low_never_exceeds_normal():
    cutoffs = family_cutoffs(DEBIAN_PSEUDO_DIR)
    assert set(cutoffs) == {"normal", "low"}
    for element in DEBIAN_PBE_FILES:
        assert cutoffs["low"][element]["cutoff_wfc"] <= cutoffs["normal"][element]["cutoff_wfc"]
        assert cutoffs["low"][element]["cutoff_rho"] >= 4 * cutoffs["low"][element]["cutoff_wfc"]


def test_presto_command_flags():
    sqlite = _presto_command("p", "sqlite", "zeromq", "127.0.0.1", 5432)
    assert "--use-zeromq" in sqlite and "--use-postgres" not in sqlite
    production = _presto_command("p", "postgresql", "rabbitmq", "db.host", 5433)
    assert "--use-postgres" in production and "--use-zeromq" not in production
    assert production[production.index("--postgres-hostname") + 1] == "db.host"
    assert production[production.index("--postgres-port") + 1] == "5433"


def test_bad_choices_are_refused_before_anything_is_created():
    with pytest.raises(SetupError, match="database must be one of"):
        ensure_profile("x", database="mysql")
    with pytest.raises(SetupError, match="broker must be one of"):
        ensure_profile("x", broker="kafka")


def test_missing_executable_gives_an_actionable_message():
    with pytest.raises(SetupError, match="installation was disabled"):
        ensure_quantum_espresso("no-such-pw.x", install=False)


def test_ensure_code_is_idempotent(aiida_localhost):
    from dataclasses import replace

    from aiida import orm

    spec = replace(PW_CODE, label="pw-idempotence")  # a label no other test registers
    first = ensure_code(spec, aiida_localhost)
    second = ensure_code(spec, aiida_localhost)
    assert first.changed and not second.changed
    code = orm.load_code(f"pw-idempotence@{aiida_localhost.label}")
    assert code.default_calc_job_plugin == "quantumespresso.pw"
    assert code.with_mpi is False


def test_ensure_code_refuses_a_missing_executable(aiida_localhost):
    spec = CodeSpec("ghost", "no-such-binary.x", "quantumespresso.pw", "missing")
    with pytest.raises(SetupError, match="not on PATH"):
        ensure_code(spec, aiida_localhost)


def test_pseudo_family_is_installed_once_with_cutoffs():
    first = ensure_pseudo_family(DEFAULT_FAMILY)
    second = ensure_pseudo_family(DEFAULT_FAMILY)
    assert not second.changed
    from aiida import orm

    family = orm.load_group(DEFAULT_FAMILY)
    assert first.changed or len(family.nodes) == len(DEBIAN_PBE_FILES)
    assert sorted(family.elements) == sorted(DEBIAN_PBE_FILES)
    assert family.get_default_stringency() == "normal"
    assert family.get_cutoffs("low")["Si"] == {"cutoff_wfc": 30.0, "cutoff_rho": 240.0}
