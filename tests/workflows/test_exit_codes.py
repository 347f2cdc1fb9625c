"""Every exit code of the oracle, incremental training and distillation work chains, offline: the step that
inspects a failed child (a finished node handed to it, as in the restart wrappers' handler tests) returns it."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_pyacemaker.data import LabelledStructuresData, StructureSetData
from aiida_pyacemaker.protocols import builder_inputs
from aiida_pyacemaker.workflows.distillation import DistillationWorkChain
from aiida_pyacemaker.workflows.incremental_training import IncrementalTrainingWorkChain
from aiida_pyacemaker.workflows.mace.base import MaceBaseWorkChain
from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain
from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain
from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain


def si8():
    return bulk("Si", "diamond", a=5.43, cubic=True)


def labelled(count: int = 2) -> LabelledStructuresData:
    structures = []
    for seed in range(count):
        atoms = si8()
        atoms.positions += np.random.default_rng(seed).normal(scale=0.02, size=atoms.positions.shape)
        atoms.info["REF_energy"] = -40.0
        atoms.arrays["REF_forces"] = np.zeros((8, 3))
        structures.append(atoms)
    return LabelledStructuresData.from_atoms(structures, source="dft")


@pytest.fixture
def oracle(mace_code, tiny_committee, pw_code, pseudo_family, generate_workchain):
    builder = TieredOracleWorkChain.get_builder_from_protocol(
        mace_code, tiny_committee, pw_code, orm.StructureData(ase=si8()), "fast"
    )
    builder.structures = StructureSetData.from_atoms([si8(), si8(), si8()])
    return generate_workchain("pyacemaker.tiered_oracle", builder_inputs(builder))


@pytest.fixture
def loop(mace_code, tiny_committee, pw_code, pacemaker_code, mace_train_code, pseudo_family, generate_workchain):
    builder = DistillationWorkChain.get_builder_from_protocol(
        StructureSetData.from_atoms([si8()]),
        tiny_committee,
        mace_code,
        pw_code,
        pacemaker_code,
        campaign="exit-codes",
        mace_train_code=mace_train_code,
        test_set=labelled(),
    )
    process = generate_workchain("pyacemaker.distillation", builder_inputs(builder))
    process.setup()
    process.ctx.iteration = 0
    return process


def test_oracle_401_when_the_teacher_fails(oracle, finished_workflow):
    oracle.ctx["mace_chunk_00000"] = finished_workflow(MaceBaseWorkChain, 310, exit_message="model unreadable")
    exit_code = oracle.inspect_teacher()
    assert exit_code.status == 401 and "MaceBaseWorkChain" in exit_code.message and "[310]" in exit_code.message


@pytest.mark.parametrize(("failed", "sent", "share", "status"), [(3, 3, 1.0, 402), (2, 3, 0.5, 402), (1, 3, 0.5, None)])
def test_oracle_402_when_dft_fails_for_every_row_or_more_than_the_share(
    oracle, finished_workflow, failed, sent, share, status
):
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    oracle.inputs.max_dft_failure_share = orm.Float(share)  # type: ignore[misc]
    oracle.ctx.dft_structures = {row: None for row in range(sent)}
    oracle.ctx.dft_done = list(range(failed, sent))
    for row in range(failed):
        oracle.ctx[f"dft_{row:06d}"] = finished_workflow(PwBaseWorkChain, 300, exit_message="pw.x crashed")
    exit_code = oracle.check_dft_failures()
    if status is None:
        assert exit_code is None
    else:
        assert exit_code.status == 402
        assert f"DFT failed for {failed} of the {sent} structures" in exit_code.message
        assert "PwBaseWorkChain" in exit_code.message and "pw.x crashed" in exit_code.message


def test_incremental_training_410_when_the_fit_fails(pacemaker_code, generate_workchain, finished_workflow):
    builder = IncrementalTrainingWorkChain.get_builder_from_protocol(pacemaker_code, "exit-codes", labelled())
    process = generate_workchain("pyacemaker.incremental_training", builder_inputs(builder))
    process.ctx.fit = finished_workflow(PacemakerBaseWorkChain, 331, exit_message="loss is not finite")
    exit_code = process.inspect_fit()
    assert exit_code.status == 410 and "loss is not finite" in exit_code.message


def test_distillation_420_when_the_oracle_fails(loop, finished_workflow):
    loop.ctx.oracle = finished_workflow(TieredOracleWorkChain, 402, exit_message="DFT failed for 3 of the 3")
    exit_code = loop.inspect_labels()
    assert exit_code.status == 420 and "DFT failed for 3 of the 3" in exit_code.message


def test_distillation_421_when_the_first_pool_gives_no_label(loop, finished_workflow):
    routing = orm.ArrayData()
    routing.set_array("route", np.array(["rejected"]))
    routing.base.attributes.set("counts", {"rejected": 1})
    reference = orm.Dict({"shift_per_atom": {}, "fitted_on_dft_structures": 0, "unit": "eV/atom"})
    loop.ctx.oracle = finished_workflow(TieredOracleWorkChain, 0, {"routing": routing, "energy_reference": reference})
    exit_code = loop.inspect_labels()
    assert exit_code.status == 421 and "rejected" in exit_code.message


def test_distillation_422_when_training_fails(loop, finished_workflow):
    loop.ctx.training = finished_workflow(IncrementalTrainingWorkChain, 410, exit_message="fit failed")
    assert loop.inspect_fit().status == 422


def test_distillation_423_when_fine_tuning_fails(loop, finished_workflow):
    loop.ctx.fine_tune_plan = loop.fine_tune_plan()
    for key in loop.ctx.fine_tune_plan:
        loop.ctx[f"fine_tune_{key}"] = finished_workflow(MaceTrainBaseWorkChain, 320, exit_message="diverged")
    exit_code = loop.calibrate_committee()
    assert exit_code.status == 423 and "diverged" in exit_code.message


def test_distillation_424_when_calibration_fails(loop, finished_workflow):
    loop.ctx.calibration = finished_workflow(MaceBaseWorkChain, 410, exit_message="out of memory")
    assert loop.inspect_calibration().status == 424


def test_distillation_426_when_relabelling_fails(loop, finished_workflow):
    loop.ctx.relabelling = finished_workflow(MaceBaseWorkChain, 410, exit_message="out of memory")
    exit_code = loop.inspect_relabelling()
    assert exit_code.status == 426 and "out of memory" in exit_code.message


def test_a_single_teacher_gives_a_derived_committee_of_fine_tuned_copies(loop):
    assert loop.fine_tune_plan() == {key: (key, index) for index, key in enumerate(sorted(loop.ctx.committee))}
    first = sorted(loop.ctx.committee)[0]
    loop.ctx.committee = {first: loop.ctx.committee[first]}
    loop.inputs.fine_tune.committee_size = orm.Int(3)  # type: ignore[misc]
    assert loop.fine_tune_plan() == {"m0": (first, 0), "m1": (first, 1), "m2": (first, 2)}


@pytest.mark.parametrize(("rmse", "status"), [(1500.0, 425), (315.0, None)])
def test_distillation_425_when_the_potential_is_unusable(loop, rmse, status):
    assert loop.inputs.max_test_force_rmse.value == 1000.0  # the fast protocol's bound
    loop.ctx.test_force_rmse = rmse
    exit_code = loop.check_potential_usable()
    assert (exit_code.status if exit_code else None) == status
    if status:
        assert "1500.0 meV/A, above the bound of 1000.0 meV/A" in exit_code.message


def test_distillation_427_when_exploration_fails(loop, finished_workflow):
    from aiida_pyacemaker.workflows.ace_md.base import AceMdBaseWorkChain

    loop.ctx.exploration = finished_workflow(AceMdBaseWorkChain, 310, exit_message="potential unreadable")
    exit_code = loop.inspect_exploration()
    assert exit_code.status == 427 and "potential unreadable" in exit_code.message


def test_distillation_428_when_validation_fails(loop, finished_workflow):
    from aiida_pyacemaker.workflows.validation import ValidationWorkChain

    loop.ctx.validation = finished_workflow(ValidationWorkChain, 430, exit_message="The dft labels failed")
    exit_code = loop.inspect_validation()
    assert exit_code.status == 428 and "The dft labels failed" in exit_code.message


def exploration_summary(selected: int) -> orm.Dict:
    record = {"stop_reason": "gamma", "max_gamma": 7.5, "time_ps": 0.8, "steps": 800, "temperature": 1200.0}
    return orm.Dict({"trajectories": [record], "frames_collected": 4, "frames_selected": selected})


def test_exploration_frames_become_the_candidates(loop, finished_workflow):
    from aiida_pyacemaker.workflows.ace_md.base import AceMdBaseWorkChain

    frames = StructureSetData.from_atoms([si8(), si8()])
    frames.set_array("gamma", np.array([3.0, 4.0]))
    loop.ctx.exploration = finished_workflow(
        AceMdBaseWorkChain, 0, {"summary": exploration_summary(2), "trajectory": orm.ArrayData(), "selected": frames}
    )
    loop.ctx.iteration = 1
    assert loop.inspect_exploration() is None
    assert loop.ctx.candidates.uuid == frames.uuid
    assert loop.ctx.records["exploration_001"]["frames_selected"] == 2


def test_exploration_without_extrapolating_frames_falls_back_to_the_pool(loop, finished_workflow):
    from aiida_pyacemaker.workflows.ace_md.base import AceMdBaseWorkChain

    loop.ctx.exploration = finished_workflow(
        AceMdBaseWorkChain, 0, {"summary": exploration_summary(0), "trajectory": orm.ArrayData()}
    )
    loop.ctx.iteration = 1
    assert loop.inspect_exploration() is None
    assert len(loop.ctx.candidates) == 30, "the fast pool (16 rattles, 8 strains, 6 vacancies)"


@pytest.fixture
def validation(evaluate_code_fixture, si_ace_potential, foundation_model, pw_code, pseudo_family, generate_workchain):
    from aiida_pyacemaker.workflows.validation import ValidationWorkChain

    builder = ValidationWorkChain.get_builder_from_protocol(
        evaluate_code_fixture,
        si_ace_potential,
        orm.StructureData(ase=si8()),
        teacher=foundation_model,
        pw_code=pw_code,
    )
    process = generate_workchain("pyacemaker.validation", builder_inputs(builder))
    process.setup()
    return process


@pytest.fixture
def evaluate_code_fixture(fixture_code):
    return fixture_code("pyacemaker.evaluate")


def test_validation_430_when_an_engine_fails(validation, finished_workflow):
    from aiida_pyacemaker.workflows.evaluate.base import EvaluateBaseWorkChain

    assert list(validation.ctx.engines) == ["ace", "teacher", "dft"]
    validation.ctx.eos_ace = finished_workflow(EvaluateBaseWorkChain, 310, exit_message="potential unreadable")
    exit_code = validation.inspect_equation_of_state()
    assert exit_code.status == 430 and "The ace labels failed" in exit_code.message
    assert "potential unreadable" in exit_code.message


def test_validation_431_when_the_md_fails(validation, finished_workflow):
    from aiida_pyacemaker.workflows.ace_md.base import AceMdBaseWorkChain

    validation.ctx.md = finished_workflow(AceMdBaseWorkChain, 311, exit_message="structures unreadable")
    exit_code = validation.inspect_md_stability()
    assert exit_code.status == 431 and "structures unreadable" in exit_code.message


def test_validation_relaxes_with_pw_where_the_row_asks_and_sets_its_bands(validation):
    structure = orm.StructureData(ase=si8().repeat(2))
    inputs = validation.dft_inputs(structure, relax=True)
    parameters = inputs["pw"]["parameters"].get_dict()
    assert parameters["CONTROL"]["calculation"] == "relax" and parameters["CONTROL"]["tstress"]
    assert parameters["SYSTEM"]["nbnd"] == 192, "64 Si atoms, 4 valence electrons each: 128 occupied bands x 1.5"
    assert validation.dft_inputs(structure, relax=False)["pw"]["parameters"]["CONTROL"]["calculation"] == "scf"
