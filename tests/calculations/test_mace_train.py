"""``MaceTrainCalculation``: ``prepare_for_submission`` and input validation offline; real mace_run_train (slow).

The expected command lines, retrieve list and copy lists are stored with pytest-regressions; node uuids are replaced
by the copied file's class and name (local copies) or the computer's label (remote copies).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from aiida import orm
from aiida.common.exceptions import InputValidationError

from aiida_pyacemaker.calculations.mace_train import STORE_FALSE_FLAGS, STORE_TRUE_FLAGS, as_flags
from aiida_pyacemaker.data import LabelledStructuresData, MaceModelData

ENTRY_POINT = "pyacemaker.mace.train"
TINY_MODEL = pathlib.Path(__file__).resolve().parents[2] / "models" / "tiny-si" / "mace_si_tiny_s0.model"
PARAMETERS = {"max_num_epochs": 3, "batch_size": 2, "num_channels": 16, "max_L": 0, "valid_fraction": 0.2, "lr": 0.01}


@pytest.fixture
def generate_inputs(fixture_code, si_dft_set):
    """Inputs of a small training job; ``extra`` overrides or adds inputs."""

    def factory(parameters=None, **extra):
        inputs = {
            "code": fixture_code(ENTRY_POINT),
            "training_set": LabelledStructuresData.from_atoms(si_dft_set[:5], source="dft"),
            "parameters": orm.Dict(parameters or PARAMETERS),
            "seeds": orm.List([0, 1]),
            "metadata": {"options": {"resources": {"num_machines": 1}, "max_wallclock_seconds": 600}},
        }
        inputs.update(extra)
        return inputs

    return factory


def summarise_calcinfo(calcinfo, folder) -> dict:
    """The deterministic part of a ``CalcInfo`` and of the files written into the sandbox."""
    from ase.io import read

    local_copies = []
    for uuid, filename, target in calcinfo.local_copy_list:
        local_copies.append([orm.load_node(uuid).__class__.__name__, filename, target])
    remote_copies = []
    for uuid, source, target in calcinfo.remote_copy_list:
        remote_copies.append([orm.load_computer(uuid).label, source, target])
    frames = read(folder.get_abs_path("train.xyz"), index=":")
    return {
        "cmdline_params": [codeinfo.cmdline_params for codeinfo in calcinfo.codes_info],
        "stdout_name": [codeinfo.stdout_name for codeinfo in calcinfo.codes_info],
        "codes_run_mode": calcinfo.codes_run_mode.name,
        "retrieve_list": calcinfo.retrieve_list,
        "local_copy_list": local_copies,
        "remote_copy_list": remote_copies,
        "sandbox": sorted(folder.get_content_list()),
        "train_xyz": {
            "frames": len(frames),
            "config_types": [atoms.info["config_type"] for atoms in frames],
            "config_weights": [float(atoms.info["config_weight"]) for atoms in frames],
            "info_keys": sorted(set().union(*(atoms.info for atoms in frames))),
            "array_keys": sorted(set().union(*(atoms.arrays for atoms in frames))),
        },
    }


def test_from_scratch(fixture_sandbox, generate_calc_job, generate_inputs, data_regression):
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, generate_inputs())
    data_regression.check(summarise_calcinfo(calcinfo, fixture_sandbox))


def test_fine_tune_with_replay_set(fixture_sandbox, generate_calc_job, generate_inputs, si_dft_set, data_regression):
    inputs = generate_inputs(
        parameters={"max_num_epochs": 2, "batch_size": 2, "valid_fraction": 0.2, "multiheads_finetuning": False},
        seeds=orm.List([0]),
        foundation_model=MaceModelData.from_file(TINY_MODEL, deduplicate=False),
        replay_set=LabelledStructuresData.from_atoms(si_dft_set[10:13], weight=[0.5] * 3),
    )
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    data_regression.check(summarise_calcinfo(calcinfo, fixture_sandbox))


def test_restart_from_parent_folder(
    fixture_sandbox, generate_calc_job, generate_inputs, aiida_localhost, data_regression
):
    """The parent's checkpoints/ go into checkpoints/ of the new job; restart_latest becomes a bare flag."""
    parent = orm.RemoteData(computer=aiida_localhost, remote_path="/scratch/aiida/ab/cd/ef-parent").store()
    inputs = generate_inputs(parameters={**PARAMETERS, "restart_latest": True}, parent_folder=parent)
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    assert fixture_sandbox.get_subfolder("checkpoints").exists()
    data_regression.check(summarise_calcinfo(calcinfo, fixture_sandbox))


def test_parent_folder_needs_restart_latest(fixture_sandbox, generate_calc_job, generate_inputs, aiida_localhost):
    parent = orm.RemoteData(computer=aiida_localhost, remote_path="/scratch/parent").store()
    with pytest.raises(ValueError, match=r"set parameters\.restart_latest to true"):
        generate_calc_job(fixture_sandbox, ENTRY_POINT, generate_inputs(parent_folder=parent))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"name": "x", "valid_fraction": 0.1}, "set by MaceTrainCalculation itself"),
        ({"save_cpu": True, "valid_fraction": 0.1}, "set by MaceTrainCalculation itself"),
        ({"multiheads_finetuning": True, "valid_fraction": 0.1}, "only naive fine-tuning"),
        ({"restart_latest": "yes", "valid_fraction": 0.1}, "is a flag of mace_run_train"),
        ({"max_num_epochs": 2}, "validation_set or parameters.valid_fraction"),
        # 3 structures, 20% validation: mace_run_train trains on 2 and fails later with batches of 4
        ({"valid_fraction": 0.2, "batch_size": 4}, r"batch_size \(4\) is larger than the 2 training structures"),
    ],
)
def test_bad_training_inputs_are_refused(
    fixture_sandbox, generate_calc_job, generate_inputs, si_dft_set, parameters, message
):
    inputs = generate_inputs(parameters=parameters, training_set=LabelledStructuresData.from_atoms(si_dft_set[:3]))
    with pytest.raises((ValueError, InputValidationError), match=message):
        generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)


def test_duplicate_seeds_are_refused(fixture_sandbox, generate_calc_job, generate_inputs):
    with pytest.raises(ValueError, match="duplicates"):
        generate_calc_job(fixture_sandbox, ENTRY_POINT, generate_inputs(seeds=orm.List([1, 1])))


def test_flags_without_value():
    assert as_flags({"restart_latest": True, "ema": False, "foundation_model_readout": False, "lr": 0.1}) == [
        "--foundation_model_readout",
        "--lr=0.1",
        "--restart_latest",
    ]


def test_flags_are_those_of_mace_run_train():
    """The flags the CalcJob passes without a value are mace_run_train's store_true/store_false options."""
    import argparse

    from mace.tools.arg_parser import build_default_arg_parser

    actions = build_default_arg_parser()._actions
    store_true = {opt[2:] for a in actions if isinstance(a, argparse._StoreTrueAction) for opt in a.option_strings}
    store_false = {opt[2:] for a in actions if isinstance(a, argparse._StoreFalseAction) for opt in a.option_strings}
    assert store_true == STORE_TRUE_FLAGS
    assert store_false == STORE_FALSE_FLAGS


# --- real mace_run_train (slow) ---------------------------------------------------------------------------------------

#: Short trainings: these tests check the mechanics, not the models.
QUICK = {"max_num_epochs": 3, "batch_size": 4}


def evaluate(model: MaceModelData, atoms, tmp_path) -> float:
    from mace.calculators import MACECalculator

    path = tmp_path / f"{model.uuid}.model"
    path.write_bytes(model.get_content(mode="rb"))
    atoms = atoms.copy()
    atoms.calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    return float(atoms.get_potential_energy())


def train(code, training_set, parameters, **inputs):
    from aiida.engine import run_get_node

    from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation

    return run_get_node(
        MaceTrainCalculation, code=code, training_set=training_set, parameters=orm.Dict(parameters), **inputs
    )[1]


def fast_protocol(key: str = "parameters") -> dict:
    """The `fast` protocol's from-scratch parameters (``parameters``) or its ``fine_tune_parameters``."""
    from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain

    inputs = MaceTrainBaseWorkChain.get_protocol_inputs("fast")
    return inputs["mace_train"]["parameters"] if key == "parameters" else inputs[key]


@pytest.mark.slow
def test_training_from_scratch_gives_models_that_load_and_evaluate(mace_train_code, si_dft_set, tmp_path):
    training_set = LabelledStructuresData.from_atoms(si_dft_set[:12], source="dft")
    node = train(mace_train_code, training_set, {**fast_protocol(), **QUICK}, seeds=orm.List([0, 1]))
    assert node.is_finished_ok, node.exit_message
    assert set(node.outputs.models) == {"s0", "s1"}
    metrics = node.outputs.metrics.get_dict()
    assert metrics["s0"]["epochs"] == QUICK["max_num_epochs"]
    assert metrics["s0"]["valid_rmse_f_mev_per_a"] > 0
    energies = [evaluate(node.outputs.models[key], si_dft_set[20], tmp_path) for key in ("s0", "s1")]
    assert all(np.isfinite(energies))
    assert energies[0] != energies[1]  # two seeds, two different models
    assert node.outputs.models.s0.elements == ["Si"]
    # The training file came from the graph: it holds exactly the labelled set.
    assert node.base.repository.get_object_content("train.xyz").count("REF_energy") == 12


@pytest.mark.slow
def test_naive_fine_tune_with_replay_changes_the_model(mace_train_code, tiny_committee, si_dft_set, tmp_path):
    foundation = tiny_committee["m0"]
    node = train(
        mace_train_code,
        LabelledStructuresData.from_atoms(si_dft_set[-6:], source="dft"),
        {**fast_protocol("fine_tune_parameters"), "max_num_epochs": 2},
        replay_set=LabelledStructuresData.from_atoms(si_dft_set[:4], source="dft", weight=[0.5] * 4),
        foundation_model=foundation,
    )
    assert node.is_finished_ok, node.exit_message
    tuned = node.outputs.models.s0
    assert tuned.sha256 != foundation.sha256
    assert "--foundation_model=foundation.model" in " ".join(
        node.base.repository.get_object_content("_aiidasubmit.sh").split()
    )
    train_file = node.base.repository.get_object_content("train.xyz")
    assert train_file.count("config_type=replay") == 4
    assert train_file.count("config_weight=0.5") == 4
    assert np.isfinite(evaluate(tuned, si_dft_set[0], tmp_path))


@pytest.mark.slow
def test_restart_continues_from_the_parent_checkpoints(mace_train_code, si_dft_set):
    """A second job with parent_folder + restart_latest loads the first job's checkpoint and goes on counting."""
    training_set = LabelledStructuresData.from_atoms(si_dft_set[:12], source="dft")
    first = train(mace_train_code, training_set, {**fast_protocol(), "max_num_epochs": 2})
    assert first.is_finished_ok, first.exit_message
    parameters = {**fast_protocol(), "max_num_epochs": 4, "restart_latest": True}
    second = train(mace_train_code, training_set, parameters, parent_folder=first.outputs.remote_folder)
    assert second.is_finished_ok, second.exit_message
    stdout = second.outputs.retrieved.base.repository.get_object_content("mace_s0.out")
    assert stdout.index("Loading checkpoint: ./checkpoints/mace_s0_run-0_epoch-") < stdout.index("Started training")
    assert second.outputs.metrics["s0"]["epochs"] == 4
    # The evaluation before training is that of a checkpointed model of the first job, not of a fresh model.
    first_curve = first.outputs.metrics["s0"]["learning_curve"]
    initial = second.outputs.metrics["s0"]["learning_curve"][0]
    assert initial["epoch"] is None
    assert any(initial["loss"] == pytest.approx(point["loss"]) for point in first_curve if point["epoch"] is not None)
    assert initial["loss"] != pytest.approx(first_curve[0]["loss"])
