"""IncrementalTrainingWorkChain: history in a group, bounded seeded replay, warm start, forgetting measured.

Labels: the tiny MACE committee (teacher) on two domains, rattled bulk and vacancy cells (8-atom Si).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from aiida import orm
from aiida.engine import run_get_node
from ase.build import bulk

from aiida_pyacemaker.data import LabelledStructuresData
from aiida_pyacemaker.data.history import get_history, history_batches
from aiida_pyacemaker.protocols import builder_inputs
from aiida_pyacemaker.replay import replay_count, sample_rows

from ..conftest import TINY_SI

#: Shorter fits than the fast protocol: these tests check the mechanics, not the potential.
FIT = {"maxiter": 40, "warm_start_maxiter": 20}


def teacher_labelled(count: int, domain: str, seed: int) -> LabelledStructuresData:
    from mace.calculators import MACECalculator

    teacher = MACECalculator(
        model_paths=sorted(str(p) for p in TINY_SI.glob("*.model")), device="cpu", default_dtype="float64"
    )
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(count):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        if domain == "vacancy":
            del atoms[int(rng.integers(len(atoms)))]
        atoms.positions += rng.normal(scale=rng.uniform(0.03, 0.1), size=atoms.positions.shape)
        atoms.calc = teacher
        atoms.info.update(REF_energy=atoms.get_potential_energy(), config_type=domain)
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        structures.append(atoms)
    return LabelledStructuresData.from_atoms(structures, source="mace").store()


def run_incremental(pacemaker_code, campaign: str, new, **extra):
    from aiida_pyacemaker.workflows.incremental_training import IncrementalTrainingWorkChain

    overrides = {"pacemaker": {"pacemaker": {"parameters": FIT}}}
    builder = IncrementalTrainingWorkChain.get_builder_from_protocol(pacemaker_code, campaign, new, overrides=overrides)
    return run_get_node(IncrementalTrainingWorkChain, **{**builder_inputs(builder), **extra})[1]


def test_replay_count_and_sampling_are_bounded_and_seeded():
    assert replay_count(n_new=10, n_old=10, buffer_size=15, min_replay_share=0.2) == 5
    assert replay_count(n_new=20, n_old=100, buffer_size=15, min_replay_share=0.2) == 3  # minimum replay share
    assert replay_count(n_new=2, n_old=4, buffer_size=15, min_replay_share=0.2) == 4  # not more than exists
    first = sample_rows([5, 0, 7], 6, seed=3)
    assert [(p, r.tolist()) for p, r in first] == [(p, r.tolist()) for p, r in sample_rows([5, 0, 7], 6, seed=3)]
    assert sum(len(rows) for _, rows in first) == 6
    assert all(rows.max() < [5, 0, 7][part] for part, rows in first)


@pytest.mark.slow
def test_seed_scenario_history_10_buffer_15_new_10(pacemaker_code):
    campaign = "seed-scenario"
    history = teacher_labelled(10, "bulk", seed=1)
    first = run_incremental(pacemaker_code, campaign, history, incremental_update=orm.Bool(True))
    assert first.is_finished_ok, first.exit_message  # first call of a campaign: from scratch
    assert "previous_potential" not in first.called[-1].inputs.pacemaker  # the PacemakerBaseWorkChain's inputs
    assert len(get_history(campaign).nodes) == 1

    new = teacher_labelled(10, "bulk", seed=2)
    node = run_incremental(
        pacemaker_code,
        campaign,
        new,
        previous_potential=first.outputs.potential,
        replay_buffer_size=orm.Int(15),
        replay_seed=orm.Int(7),
    )
    assert node.is_finished_ok, node.exit_message
    training = node.outputs.training_set
    assert len(training) == 15
    assert training.get_array("role").tolist() == ["new"] * 10 + ["replay"] * 5
    old_prints = set(history.get_array("fingerprints").tolist())
    assert set(training.get_array("fingerprints")[10:].tolist()) <= old_prints
    assert sum(len(batch) for batch in history_batches(get_history(campaign))) == 20

    (fit,) = [n for n in node.called_descendants if n.process_label == "PacemakerCalculation"]
    assert fit.caller.process_label == "PacemakerBaseWorkChain"  # through its restart wrapper
    content = yaml.safe_load(fit.base.repository.get_object_content("input.yaml", mode="r"))
    assert content["potential"] == "previous.yaml"
    assert fit.base.repository.get_object_content("train.xyz", mode="r").count("REF_energy") <= 15

    # Re-adding the same structures does not grow the history.
    again = run_incremental(
        pacemaker_code, campaign, new, previous_potential=node.outputs.potential, replay_buffer_size=orm.Int(15)
    )
    assert again.is_finished_ok, again.exit_message
    assert sum(len(batch) for batch in history_batches(get_history(campaign))) == 20


@pytest.mark.slow
def test_same_seed_same_training_set_and_dopt_runs(pacemaker_code):
    from aiida_pyacemaker.calculations.functions.training import build_training_set

    older = {f"history_{i:05d}": teacher_labelled(8, "bulk", seed=10 + i) for i in range(2)}
    new = teacher_labelled(4, "vacancy", seed=20)
    settings = {"buffer_size": 10, "strategy": "random", "seed": 5, "min_share": 0.2, "replay_weight": 0.5}
    one = build_training_set(new, orm.Dict(settings), **older)["training_set"]
    two = build_training_set(new, orm.Dict(settings), **older)["training_set"]
    other = build_training_set(new, orm.Dict({**settings, "seed": 6}), **older)["training_set"]
    assert one.get_array("fingerprints").tolist() == two.get_array("fingerprints").tolist()
    assert one.get_array("fingerprints").tolist() != other.get_array("fingerprints").tolist()
    assert one.get_array("weight")[4:].tolist() == [0.5] * 6

    scratch = run_incremental(pacemaker_code, "dopt-campaign", older["history_00000"])
    assert scratch.is_finished_ok, scratch.exit_message
    dopt = build_training_set(
        new,
        orm.Dict({**settings, "strategy": "dopt"}),
        previous_potential=scratch.outputs.potential,
        **older,
    )["training_set"]
    assert len(dopt) == 10
    assert dopt.base.attributes.get("replay")["selected_by_maxvol"] >= 1


@pytest.mark.slow
def test_warm_refit_learns_the_new_domain_and_records_forgetting(pacemaker_code):
    campaign = "forgetting"
    test_set = LabelledStructuresData.gather(
        [(teacher_labelled(6, "bulk", seed=30), range(6)), (teacher_labelled(6, "vacancy", seed=31), range(6))]
    ).store()
    first = run_incremental(pacemaker_code, campaign, teacher_labelled(20, "bulk", seed=32), test_set=test_set)
    assert first.is_finished_ok, first.exit_message
    assert set(first.outputs.forgetting["after"]) == {"bulk", "vacancy"}

    node = run_incremental(
        pacemaker_code,
        campaign,
        teacher_labelled(20, "vacancy", seed=33),
        previous_potential=first.outputs.potential,
        test_set=test_set,
        replay_buffer_size=orm.Int(30),
    )
    assert node.is_finished_ok, node.exit_message
    forgetting = node.outputs.forgetting.get_dict()
    before, after = forgetting["before"], forgetting["after"]
    assert after["vacancy"]["rmse_f_mev_per_a"] < before["vacancy"]["rmse_f_mev_per_a"]
    assert forgetting["force_rmse_ratio"]["bulk"] == pytest.approx(
        after["bulk"]["rmse_f_mev_per_a"] / before["bulk"]["rmse_f_mev_per_a"]
    )
    reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any("forgetting (force RMSE after / before)" in message for message in reports)


@pytest.mark.parametrize("protocol", ["fast", "balanced", "stringent"])
def test_protocols_build_valid_inputs(protocol, pacemaker_code, generate_workchain):
    from aiida_pyacemaker.workflows.incremental_training import IncrementalTrainingWorkChain

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["REF_energy"] = -10.0
    atoms.arrays["REF_forces"] = np.zeros((2, 3))
    new = LabelledStructuresData.from_atoms([atoms])
    builder = IncrementalTrainingWorkChain.get_builder_from_protocol(pacemaker_code, "c", new, protocol=protocol)
    process = generate_workchain("pyacemaker.incremental_training", builder_inputs(builder))
    expected = {"fast": (200, "random"), "balanced": (2000, "random"), "stringent": (5000, "dopt")}[protocol]
    assert (process.inputs.replay_buffer_size.value, process.inputs.replay_strategy.value) == expected
    assert process.inputs.pacemaker.pacemaker.code.pk == pacemaker_code.pk
    assert "parameters" in process.inputs.pacemaker.pacemaker


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"replay_buffer_size": 0}, "replay_buffer_size must be >= 1"),
        ({"replay_strategy": "fifo"}, "replay_strategy must be one of"),
        ({"min_replay_share": 1.5}, "min_replay_share must be in"),
    ],
)
def test_bad_replay_settings_are_refused_at_submission(pacemaker_code, extra, message):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["REF_energy"] = -10.0
    atoms.arrays["REF_forces"] = np.zeros((2, 3))
    new = LabelledStructuresData.from_atoms([atoms])
    with pytest.raises(ValueError, match=message):
        run_incremental(pacemaker_code, "bad", new, **{k: orm.to_aiida_type(v) for k, v in extra.items()})
