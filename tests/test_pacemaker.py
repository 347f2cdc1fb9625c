"""PacemakerCalculation with real pacemaker (tensorpot backend) on the pw.x-labelled Si set."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from aiida import orm
from aiida.engine import run_get_node

from aiida_pyacemaker.calculations.pacemaker import PacemakerCalculation, build_input_yaml
from aiida_pyacemaker.data import AcePotentialData, LabelledStructuresData
from aiida_pyacemaker.protocols import get_protocol_parameters

# Labels: real pw.x (models/tiny-si/si_dft.xyz), 8-atom Si cells; a tiny basis keeps each fit to seconds.
FIT = {**get_protocol_parameters("pacemaker", "fast"), "maxiter": 40, "warm_start_maxiter": 15}


def fit(code, training_set, parameters=None, **inputs):
    parameters = {**FIT, **(parameters or {})}
    return run_get_node(
        PacemakerCalculation, code=code, training_set=training_set, parameters=orm.Dict(parameters), **inputs
    )[1]


@pytest.fixture
def si_sets(si_dft_set):
    train = LabelledStructuresData.from_atoms(si_dft_set[:28], source="dft").store()
    test = LabelledStructuresData.from_atoms(si_dft_set[28:], source="dft").store()
    return train, test


@pytest.fixture
def scratch_fit(pacemaker_code, si_sets):
    train, test = si_sets
    node = fit(pacemaker_code, train, test_set=test)
    assert node.is_finished_ok, node.exit_message
    return node


def input_yaml(node) -> dict:
    return yaml.safe_load(node.base.repository.get_object_content("input.yaml", mode="r"))


def test_input_yaml_for_scratch_warm_start_and_ladder():
    scratch = build_input_yaml(FIT, ["Si"], has_test_set=True, warm_start=False)
    assert scratch["potential"]["elements"] == ["Si"]
    assert scratch["data"] == {
        "filename": "train.pckl.gzip",
        "test_filename": "test.pckl.gzip",
        "reference_energy": "auto",
    }
    assert scratch["fit"]["maxiter"] == 40
    warm = build_input_yaml(FIT, ["Si"], has_test_set=False, warm_start=True, reference_energy={"Si": -1.0})
    assert warm["potential"] == "previous.yaml"
    assert warm["fit"]["maxiter"] == 15
    assert warm["data"]["reference_energy"] == {"Si": -1.0}
    ladder = build_input_yaml({**FIT, "ladder_step": 10}, ["Si"], has_test_set=False, warm_start=False, ladder=True)
    assert ladder["potential"]["initial_potential"] == "initial.yaml"
    assert ladder["fit"]["ladder_step"] == 10


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"maxiters": 10}, "unknown key `maxiters`"),
        ({"kappa": 2.0}, "parameters.kappa"),
        ({"backend": "jax"}, "parameters.backend"),
        ({"source_weights": {"vasp": 1.0}}, "parameters.source_weights"),
    ],
)
def test_bad_fit_settings_are_refused_at_submission(pacemaker_code, si_sets, parameters, message):
    with pytest.raises(ValueError, match=message):
        fit(pacemaker_code, si_sets[0], parameters)


@pytest.mark.slow
def test_fit_from_scratch(scratch_fit, si_dft_set):
    node = scratch_fit
    metrics = node.outputs.metrics.get_dict()
    assert metrics["backend"] == "tensorpot"
    assert metrics["iterations"] >= 30
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert 0 < metrics["test_rmse_f_mev_per_a"] < 1000
    assert 0 < metrics["test_rmse_e_mev_per_atom"] < 100

    content = input_yaml(node)
    assert content["potential"]["elements"] == ["Si"]
    assert content["data"]["filename"] == "train.pckl.gzip"
    assert content["data"]["test_filename"] == "test.pckl.gzip"
    # No pickle travels: the driver writes it on the computer that runs pacemaker.
    assert not [name for name in node.base.repository.list_object_names() if name.endswith(".pckl.gzip")]
    # DFT rows carry the source weight of the protocol (2.0) as pacemaker's w_factor.
    assert node.base.repository.get_object_content("train.xyz", mode="r").count("w_factor=2.0") == 28

    potential = node.outputs.potential
    assert isinstance(potential, AcePotentialData)
    assert potential.elements == ["Si"] and potential.cutoff == pytest.approx(5.0)
    assert potential.num_functions > 0 and "Si" in potential.reference_energy
    assert set(potential.base.repository.list_object_names()) == {"potential.yaml", "potential.yace"}
    atoms = si_dft_set[30].copy()
    atoms.calc = potential.get_calculator()
    assert atoms.get_potential_energy() == pytest.approx(si_dft_set[30].info["REF_energy"], abs=0.1 * len(atoms))


@pytest.mark.slow
def test_warm_start_continues_from_the_previous_loss(pacemaker_code, scratch_fit, si_sets):
    previous = scratch_fit.outputs.potential
    train, test = si_sets
    warm = fit(pacemaker_code, train, test_set=test, previous_potential=previous)
    assert warm.is_finished_ok, warm.exit_message
    content = input_yaml(warm)
    assert content["potential"] == "previous.yaml"
    assert content["data"]["reference_energy"] == previous.reference_energy
    assert warm.base.repository.get_object_content("previous.yaml", mode="r") == previous.get_yaml()

    scratch_metrics = scratch_fit.outputs.metrics.get_dict()
    warm_metrics = warm.outputs.metrics.get_dict()
    # The first recorded loss of the continued fit is where the previous fit ended, not where a fresh one starts.
    assert warm_metrics["initial_loss"] <= 1.5 * scratch_metrics["final_loss"]
    assert warm_metrics["initial_loss"] < 0.1 * scratch_metrics["initial_loss"]
    assert warm_metrics["iterations"] >= 10
    assert warm.outputs.potential.reference_energy == previous.reference_energy


@pytest.mark.slow
def test_continuing_from_an_interim_potential_still_fits(pacemaker_code, scratch_fit, si_sets, tmp_path):
    """An interim file carries `_fit_cycles`; pacemaker would fit nothing. The driver strips it."""
    paths = scratch_fit.outputs.potential.write_files(tmp_path)
    text = paths["yaml"].read_text().replace("metadata:\n", "metadata:\n  _fit_cycles: 1\n", 1)
    paths["yaml"].write_text(text)
    interim = AcePotentialData.from_files(paths["yaml"]).store()
    node = fit(pacemaker_code, si_sets[0], previous_potential=interim)
    assert node.is_finished_ok, node.exit_message
    assert node.outputs.metrics["iterations"] >= 10
    summary = node.outputs.retrieved.base.repository.get_object_content("driver_summary.json", mode="r")
    assert '"stripped_fit_cycles": true' in summary


@pytest.mark.slow
def test_active_set_gives_gamma(pacemaker_code, si_sets, si_dft_set):
    node = fit(pacemaker_code, si_sets[0], {"active_set": True, "maxiter": 10})
    assert node.is_finished_ok, node.exit_message
    potential = node.outputs.potential
    assert potential.has_active_set
    atoms = si_dft_set[0].copy()
    atoms.calc = potential.get_calculator()
    atoms.get_potential_energy()
    gamma = np.asarray(atoms.calc.results["gamma"])
    assert gamma.shape == (len(atoms),) and np.all(gamma >= 0)


@pytest.mark.slow
def test_elements_outside_the_previous_potential_are_refused(pacemaker_code, scratch_fit):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    copper.calc = EMT()
    copper.get_potential_energy()
    training = LabelledStructuresData.from_atoms([copper])
    with pytest.raises(ValueError, match=r"no basis for \['Cu'\]"):
        fit(pacemaker_code, training, previous_potential=scratch_fit.outputs.potential)
