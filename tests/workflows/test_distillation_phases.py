"""Phases 2 and 3 in the loop, on the daemon: a single foundation teacher, exploration by MD with the current ACE
from the second iteration on, and the final potential validated against the teacher and pw.x."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_pyacemaker.data import LabelledStructuresData, StructureSetData


@pytest.mark.slow
@pytest.mark.daemon
def test_loop_explores_with_md_and_validates_its_potential(
    aiida_profile,
    daemon_client,
    submit_and_await,
    mace_code,
    pw_code,
    pacemaker_code,
    ace_md_code,
    evaluate_code,
    pseudo_family,
    foundation_model,
    si_test_set,
):
    from aiida_pyacemaker.cli.distil import describe
    from aiida_pyacemaker.workflows.ace_md.base import AceMdBaseWorkChain
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain
    from aiida_pyacemaker.workflows.validation import ValidationWorkChain

    builder = DistillationWorkChain.get_builder_from_protocol(
        StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43, cubic=True)]),
        {"m0": foundation_model},
        mace_code,
        pw_code,
        pacemaker_code,
        campaign="phases-2-3",
        md_code=ace_md_code,
        evaluate_code=evaluate_code,
        test_set=LabelledStructuresData.from_atoms(si_test_set, source="dft"),
        protocol="fast",
        overrides={
            "exploration": {"md": {"parameters": {"steps": 600, "gamma_select": 1.5}}},
            "validation": {"md": {"md": {"parameters": {"steps": 1000, "nve_steps": 500}}}},
        },
    )
    if not daemon_client.is_daemon_running:
        daemon_client.start_daemon()
    node = submit_and_await(builder, timeout=2400)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    explorations = [child for child in node.called if child.process_class is AceMdBaseWorkChain]
    by_pk = sorted(node.called, key=lambda child: child.pk)
    oracles = [child for child in by_pk if child.process_class is TieredOracleWorkChain]
    assert len(explorations) == 1 and len(oracles) == 2
    exploration = explorations[0]
    assert exploration.inputs.md.parameters["mode"] == "explore"
    first_potential = next(c for c in by_pk if c.process_label == "IncrementalTrainingWorkChain")
    assert exploration.inputs.md.potential.uuid == first_potential.outputs.potential.uuid, "MD with the first ACE"
    summary = node.outputs.summary.get_dict()
    second = summary["per_iteration"][1]
    if "selected" in exploration.outputs:
        # the second oracle labels exactly the frames where ACE extrapolated, and keeps gamma beside u
        assert oracles[1].inputs.structures.uuid == exploration.outputs.selected.uuid
        gamma = oracles[1].outputs.routing.get_array("ace_gamma")
        assert (gamma >= 1.5).all() and len(gamma) == len(oracles[1].outputs.routing.get_array("uncertainty"))
        assert second["exploration"]["frames_selected"] == len(gamma)
    else:  # nothing extrapolated: the loop fell back to a fresh pool, and says so
        assert second["exploration"]["frames_selected"] == 0
    assert np.isfinite(second["test_force_rmse_mev_per_a"])

    (validation,) = [child for child in node.called if child.process_class is ValidationWorkChain]
    assert validation.inputs.potential.uuid == node.outputs.potential.uuid
    assert validation.inputs.teacher.uuid == foundation_model.uuid
    table = node.outputs.validation.get_dict()
    assert table["engines"] == ["ace", "teacher", "dft"]
    assert 5.40 < table["properties"]["dft"]["lattice_constant"] < 5.52
    assert table["md"]["md_atoms"] == 64
    assert "validation_curves" in node.outputs
    text = "\n".join(describe(node))
    assert "validation of the final potential on Si8 (Phase 2):" in text and "C44" in text
    assert "exploration before iteration 1" in text
    assert isinstance(node.outputs.validation, orm.Dict)
