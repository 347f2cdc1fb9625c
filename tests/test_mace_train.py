"""MaceTrainCalculation with real mace_run_train: a short training and a naive fine-tune, each usable."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation
from aiida_pyacemaker.data import LabelledStructuresData, MaceModelData
from aiida_pyacemaker.protocols import get_protocol_parameters

pytestmark = pytest.mark.slow

QUICK = {"max_num_epochs": 3, "batch_size": 4}


def evaluate(model: MaceModelData, atoms, tmp_path) -> float:
    from mace.calculators import MACECalculator

    path = tmp_path / f"{model.uuid}.model"
    path.write_bytes(model.get_content(mode="rb"))
    atoms = atoms.copy()
    atoms.calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    return float(atoms.get_potential_energy())


def train(code, training_set, parameters, **inputs):
    return run_get_node(
        MaceTrainCalculation, code=code, training_set=training_set, parameters=orm.Dict(parameters), **inputs
    )[1]


def test_training_from_scratch_gives_models_that_load_and_evaluate(mace_train_code, si_dft_set, tmp_path):
    training_set = LabelledStructuresData.from_atoms(si_dft_set[:12], source="dft")
    parameters = {**get_protocol_parameters("mace_train", "tiny"), **QUICK}
    node = train(mace_train_code, training_set, parameters, seeds=orm.List([0, 1]))
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


def test_naive_fine_tune_with_replay_changes_the_model(mace_train_code, tiny_committee, si_dft_set, tmp_path):
    foundation = tiny_committee["m0"]
    parameters = {**get_protocol_parameters("mace_train", "fine_tune"), "max_num_epochs": 2}
    node = train(
        mace_train_code,
        LabelledStructuresData.from_atoms(si_dft_set[-6:], source="dft"),
        parameters,
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


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"name": "x", "valid_fraction": 0.1}, "set by MaceTrainCalculation itself"),
        ({"multiheads_finetuning": True, "valid_fraction": 0.1}, "only naive fine-tuning"),
        ({"max_num_epochs": 2}, "validation_set or parameters.valid_fraction"),
        # 3 structures, 20% validation: mace_run_train trains on 2 and fails later with batches of 4
        ({"valid_fraction": 0.2, "batch_size": 4}, r"batch_size \(4\) is larger than the 2 training structures"),
    ],
)
def test_bad_training_inputs_are_refused_at_submission(mace_train_code, si_dft_set, parameters, message):
    with pytest.raises(ValueError, match=message):
        train(mace_train_code, LabelledStructuresData.from_atoms(si_dft_set[:3]), parameters)


def test_duplicate_seeds_are_refused(mace_train_code, si_dft_set):
    with pytest.raises(ValueError, match="duplicates"):
        train(
            mace_train_code,
            LabelledStructuresData.from_atoms(si_dft_set[:3]),
            {"valid_fraction": 0.2},
            seeds=orm.List([1, 1]),
        )
