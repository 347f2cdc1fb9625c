"""Loud failures with a pw.x that always fails: the oracle exits 402 with the labels that exist, and the loop stops
with that message instead of "succeeding" without DFT."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.build import bulk

from aiida_pyacemaker.data import StructureSetData

pytestmark = pytest.mark.slow


@pytest.fixture
def broken_pw_code(aiida_localhost):
    """A `pw.x` that exits 1 at once (``/bin/false``), registered like the real one."""
    label = "pw-broken"
    try:
        return orm.load_code(f"{label}@{aiida_localhost.label}")
    except Exception:
        code = orm.InstalledCode(
            label=label,
            computer=aiida_localhost,
            filepath_executable="/bin/false",
            default_calc_job_plugin="quantumespresso.pw",
            with_mpi=False,
        )
        return code.store()


def test_every_dft_row_failing_fails_the_oracle_and_stops_the_loop(
    mace_code, pw_code, pacemaker_code, broken_pw_code, tiny_committee, pseudo_family
):
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    # Overrides merge into the protocol's policies: switch the other two off for a pool of 4.
    policies = {"rattle": {"per_prototype": 4}, "strain": {"per_prototype": 0}, "vacancy": {"per_prototype": 0}}
    pool = {"seed": 1, "policies": policies}
    overrides = {
        "pool": pool,
        "dft_budget": 2,
        "max_iterations": 1,
        "oracle": {"uncertainty_threshold": 0.0, "threshold_call_dft": 0.0, "max_concurrent_dft": 2},
    }
    builder = DistillationWorkChain.get_builder_from_protocol(
        StructureSetData.from_atoms([si8]),
        tiny_committee,
        mace_code,
        broken_pw_code,
        pacemaker_code,
        campaign="broken-dft",
        overrides=overrides,
    )
    _, loop = run_get_node(builder)
    assert loop.exit_status == 420, (loop.exit_status, loop.exit_message)
    assert "DFT failed for 2 of the 2 structures sent to it" in loop.exit_message

    (oracle,) = [n for n in loop.called if n.process_class is TieredOracleWorkChain]
    assert oracle.exit_status == 402
    counts = oracle.outputs.routing.base.attributes.get("counts")
    assert counts["dft_failed"] == 2 and counts["over_budget"] == 2  # nothing was lost: every row is recorded
    assert "labelled" not in oracle.outputs  # thresholds of 0 route every row to DFT: no teacher label
