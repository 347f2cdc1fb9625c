"""DistillationWorkChain: candidate policies, validation at submission, and the whole loop on the daemon."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_pyacemaker.candidates import make_candidates, validate_policies
from aiida_pyacemaker.data import LabelledStructuresData, StructureSetData
from aiida_pyacemaker.protocols import builder_inputs

POLICIES = {
    "rattle": {"per_prototype": 3, "stdev": [0.01, 0.1]},
    "strain": {"per_prototype": 2, "max_strain": 0.04, "stdev": [0.0, 0.02]},
    "vacancy": {"per_prototype": 1, "stdev": [0.01, 0.05]},
}


def si8():
    return bulk("Si", "diamond", a=5.43, cubic=True)


def test_candidates_are_seeded_and_follow_the_policies():
    prototypes = [si8(), bulk("Si", "diamond", a=5.5)]
    first = make_candidates(prototypes, POLICIES, seed=7)
    assert len(first) == 2 * (3 + 2 + 1)
    again = make_candidates(prototypes, POLICIES, seed=7)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(first, again, strict=True))
    other = make_candidates(prototypes, POLICIES, seed=8)
    assert not np.array_equal(first[0].positions, other[0].positions)
    kinds = [atoms.info["config_type"] for atoms in first]
    assert kinds == ["rattle"] * 6 + ["strain"] * 4 + ["vacancy"] * 2
    assert [len(atoms) for atoms in first[-2:]] == [7, 1]
    strained = first[6]
    assert not np.allclose(strained.cell.array, si8().cell.array)
    assert np.allclose(first[0].cell.array, si8().cell.array)  # a rattle keeps the cell


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ({}, "give a mapping"),
        ({"shake": {}}, "policies.shake: unknown policy; allowed: ['rattle', 'strain', 'vacancy']"),
        ({"rattle": {"per_prototype": 2}}, "policies.rattle: missing ['stdev']"),
        ({"rattle": {"per_prototype": -1, "stdev": [0, 1]}}, "policies.rattle.per_prototype: expected an integer"),
        ({"rattle": {"per_prototype": 1, "stdev": [0.2, 0.1]}}, "policies.rattle.stdev: expected [low, high]"),
        ({"rattle": {"per_prototype": 1, "stdev": [0, 1], "seed": 3}}, "policies.rattle.seed: unknown key"),
        ({"strain": {"per_prototype": 1, "stdev": [0, 1]}}, "policies.strain: missing ['max_strain']"),
        ({"rattle": {"per_prototype": 0, "stdev": [0, 1]}}, "no candidate would be made"),
    ],
)
def test_policy_errors_name_the_key_and_the_allowed_values(policies, message):
    assert message in validate_policies(policies)


def loop_builder(codes, tiny_committee, **overrides):
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain

    prototypes = StructureSetData.from_atoms([si8()])
    return DistillationWorkChain.get_builder_from_protocol(
        prototypes,
        tiny_committee,
        codes["mace"],
        codes["pw"],
        codes["pacemaker"],
        campaign="test-loop",
        mace_train_code=codes.get("mace_train"),
        overrides=overrides or None,
    )


@pytest.fixture
def codes(mace_code, pw_code, pacemaker_code, mace_train_code, pseudo_family):
    return {"mace": mace_code, "pw": pw_code, "pacemaker": pacemaker_code, "mace_train": mace_train_code}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pool": {"policies": {"rattle": {"per_prototype": -1}}}}, "pool.policies.rattle.per_prototype: expected"),
        ({"pool": {"seed": 1, "size": 3, "policies": {}}}, "pool: unknown keys ['size']"),
        ({"dft_budget": -1}, "dft_budget must be >= 0"),
        ({"max_iterations": 0}, "max_iterations must be >= 1"),
        ({"target_force_rmse": 50.0}, "target_force_rmse needs a test_set"),
    ],
)
def test_bad_loop_inputs_are_refused_at_submission(codes, tiny_committee, change, message):
    from aiida.engine import run

    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(loop_builder(codes, tiny_committee, **change))  # a port validator refuses already in the builder


@pytest.mark.parametrize("protocol", ["fast", "balanced", "stringent"])
def test_protocols_build_valid_inputs_passed_down_to_the_children(protocol, codes, tiny_committee, generate_workchain):
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain

    builder = DistillationWorkChain.get_builder_from_protocol(
        StructureSetData.from_atoms([si8()]),
        tiny_committee,
        codes["mace"],
        codes["pw"],
        codes["pacemaker"],
        campaign="protocols",
        mace_train_code=codes["mace_train"],
        protocol=protocol,
        overrides={"oracle": {"max_concurrent_dft": 3}, "fine_tune": {"mace_train": {"parameters": {"lr": 0.002}}}},
    )
    inputs = generate_workchain("pyacemaker.distillation", builder_inputs(builder)).inputs
    budget = {"fast": 6, "balanced": 50, "stringent": 200}[protocol]
    assert inputs.dft_budget.value == budget
    assert inputs.oracle.max_concurrent_dft.value == 3  # a nested override reaches the child
    kpoints = {"fast": 0.45, "balanced": 0.15, "stringent": 0.10}[protocol]
    assert inputs.oracle.dft.kpoints_distance.value == pytest.approx(kpoints)  # the DFT tier follows the protocol
    assert inputs.fine_tune.mace_train.parameters["lr"] == 0.002
    epochs = {"fast": 10, "balanced": 50, "stringent": 100}[protocol]
    assert inputs.fine_tune.mace_train.parameters["max_num_epochs"] == epochs
    assert "foundation_model" not in inputs.fine_tune.mace_train  # the loop sets each member's own
    assert inputs.training.replay_buffer_size.value == {"fast": 200, "balanced": 2000, "stringent": 5000}[protocol]


def test_override_errors_name_the_nested_key(codes, tiny_committee):
    from aiida_pyacemaker.protocols import ProtocolError

    with pytest.raises(ProtocolError, match=r"oracle: mace: `mace.batch` is not an input"):
        loop_builder(codes, tiny_committee, oracle={"mace": {"mace": {"batch": 3}}})
    with pytest.raises(ProtocolError, match="`dft_budget` = 'three' does not fit"):
        loop_builder(codes, tiny_committee, dft_budget="three")


def test_unknown_element_and_non_dft_test_set_are_refused(codes, tiny_committee, si_dft_set):
    from aiida.engine import run

    builder = loop_builder(codes, tiny_committee)
    builder.prototypes = StructureSetData.from_atoms([bulk("Ge", "diamond", a=5.66, cubic=True)])
    with pytest.raises(ValueError, match=r"prototypes contain \['Ge'\], which the MACE committee does not know"):
        run(builder)
    builder = loop_builder(codes, tiny_committee)
    builder.test_set = LabelledStructuresData.from_atoms(si_dft_set[:2], source="mace")
    with pytest.raises(ValueError, match="test_set: the held-out set must be DFT-labelled"):
        run(builder)


@pytest.mark.slow
@pytest.mark.daemon
def test_loop_on_the_daemon_with_real_pw_and_fine_tuning(
    aiida_profile, daemon_client, submit_and_await, codes, tiny_committee, si_test_set, tmp_path
):
    """The `fast` protocol end to end: Phase 1, then Phase 4 on the DFT structures; every step in the graph."""
    from aiida_pyacemaker.data.history import get_history
    from aiida_pyacemaker.plots import write_campaign_plots
    from aiida_pyacemaker.workflows.incremental_training import IncrementalTrainingWorkChain
    from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    test_set = LabelledStructuresData.from_atoms(si_test_set, source="dft").store()
    builder = loop_builder(codes, tiny_committee)
    builder.test_set = test_set
    if not daemon_client.is_daemon_running:
        daemon_client.start_daemon()
    node = submit_and_await(builder, timeout=1200)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    summary = node.outputs.summary.get_dict()
    first, second = summary["per_iteration"]
    calls = summary["dft_calls"]
    # the fast budget (6), spent on the first pool: 4 calibration rows, then the most uncertain above the threshold
    assert 4 <= calls <= 6 and calls == first["dft_calls_total"] == first["routes"]["dft"]
    assert sum(first["routes"].values()) == 30
    assert second["routes"].get("dft", 0) == 0  # budget spent: surrogates are labelled by the fine-tuned MACE
    assert summary["stop_reason"].startswith("max_iterations")
    assert all(np.isfinite(record["test_force_rmse_mev_per_a"]) for record in summary["per_iteration"])
    assert set(second["forgetting"]) == {"rattle", "strain", "vacancy"}  # per domain of the frozen test set

    oracles = sorted((n for n in node.called if n.process_class is TieredOracleWorkChain), key=lambda n: n.pk)
    fits = sorted((n for n in node.called if n.process_class is IncrementalTrainingWorkChain), key=lambda n: n.pk)
    tunes = [n for n in node.called if n.process_class is MaceTrainBaseWorkChain]
    assert len(oracles) == 2 and len(fits) == 2 and len(tunes) == 3
    assert all(tune.inputs.mace_train.training_set.base.attributes.get("sources") == {"dft": calls} for tune in tunes)
    # Phase 4 labels with the fine-tuned committee, and the second fit continues the first potential.
    report = "\n".join(log.message for log in orm.Log.collection.get_logs_for(node))
    teacher_now = {model.uuid for model in oracles[1].inputs.mace.mace.models.values()}
    if "committee" in node.outputs:  # the fine-tuned committee kept most old labels within their error: it labels
        assert teacher_now == {model.uuid for model in node.outputs.committee.values()}
    else:  # it drifted: rejected, the original committee labels on
        assert "it drifted, it is not used" in report
        assert teacher_now == {model.uuid for model in tiny_committee.values()}
    assert fits[1].inputs.previous_potential.uuid == fits[0].outputs.potential.uuid
    assert node.outputs.potential.uuid == fits[1].outputs.potential.uuid
    # The surrogates are made around the DFT structures of the first iteration.
    assert len(oracles[1].inputs.structures) == 3 * calls
    # The uncertainty is calibrated on the DFT rows; the calibration is carried to the next oracle and output.
    calibration = oracles[0].outputs.calibration
    assert calibration["points"] == calls and calibration["uncertainty_kind"] == "committee"
    assert oracles[1].inputs.calibration.uuid == calibration.uuid
    assert node.outputs.calibration["points"] >= calls
    # Phase 4 relabels the first iteration's teacher rows with the fine-tuned committee before the delta update
    # (where the new label is within the old one's calibrated error; the others keep theirs).
    (relabelling,) = [n for n in node.called if n.process_label == "relabel"]
    labelled_now = sum(second["routes"].get(r, 0) for r in ("mace", "dft"))
    new_rows = fits[1].inputs.new_structures
    if "relabelled" in relabelling.outputs and "committee" in node.outputs:
        counts = relabelling.outputs.relabelled.base.attributes.get("relabelling")
        assert counts["relabelled"] + counts["kept_old_label"] == first["routes"]["mace"]
        assert len(new_rows) == counts["relabelled"] + labelled_now
    else:
        assert len(new_rows) == labelled_now
    assert len(get_history("test-loop").nodes) == 2

    assert_calcjobs_only_under_their_wrappers(node)

    report = "\n".join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert "iteration 0: structures by route" in report and f"DFT calls so far {calls} of 6" in report
    assert "relabelling" in report
    assert "test force RMSE" in report and "stop: max_iterations" in report

    # The command line on the campaign's results: the potential's files and the whole history.
    from ase.io import read
    from click.testing import CliRunner

    from aiida_pyacemaker.cli.data import pyacemaker

    runner = CliRunner()
    shown = runner.invoke(pyacemaker, ["show", str(node.outputs.potential.pk)])
    assert shown.exit_code == 0 and "created_by: PacemakerCalculation<" in shown.output
    exported = runner.invoke(pyacemaker, ["export", str(node.outputs.potential.pk), str(tmp_path / "potential")])
    assert exported.exit_code == 0 and (tmp_path / "potential").is_dir()
    assert {p.suffix for p in (tmp_path / "potential").iterdir()} >= {".yaml", ".yace"}
    history = runner.invoke(pyacemaker, ["export-history", "test-loop", str(tmp_path / "history.xyz")])
    assert history.exit_code == 0, history.output
    rows = sum(len(batch) for batch in get_history("test-loop").nodes)
    assert len(read(tmp_path / "history.xyz", index=":")) == rows

    paths = write_campaign_plots(node, tmp_path)
    assert sorted(path.name for path in paths) == [
        "calibration.png",
        "energy_parity.png",
        "force_parity.png",
        "learning_curve.png",
        "uncertainty_histogram.png",
    ]
    assert all(path.stat().st_size > 10_000 for path in paths)


def assert_calcjobs_only_under_their_wrappers(root) -> None:
    """Every MACE, MACE-training and pacemaker CalcJob below ``root`` was called by its restart wrapper."""
    from aiida.orm import CalcJobNode, WorkflowNode

    from aiida_pyacemaker.calculations.mace import MaceCalculation
    from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation
    from aiida_pyacemaker.calculations.pacemaker import PacemakerCalculation
    from aiida_pyacemaker.workflows.mace.base import MaceBaseWorkChain
    from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain
    from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain

    wrapper_of = {
        MaceCalculation: MaceBaseWorkChain,
        MaceTrainCalculation: MaceTrainBaseWorkChain,
        PacemakerCalculation: PacemakerBaseWorkChain,
    }
    seen: dict = {calc: 0 for calc in wrapper_of}
    stack = [root]
    while stack:
        parent = stack.pop()
        for child in parent.called:
            if isinstance(child, WorkflowNode):
                stack.append(child)
            elif isinstance(child, CalcJobNode) and child.process_class in wrapper_of:
                seen[child.process_class] += 1
                assert parent.process_class is wrapper_of[child.process_class], (
                    f"{child.process_label}<{child.pk}> called by {parent.process_label}<{parent.pk}>"
                )
    assert all(seen.values()), f"every CalcJob kind runs in a campaign: {seen}"
