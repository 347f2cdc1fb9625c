"""``PacemakerCalculation``: the job's inputs (offline, against stored expectations) and, marked slow, real fits.

Slow tests run pacemaker (tensorpot backend) on the pw.x-labelled Si set (``models/tiny-si/si_dft.xyz``, 8-atom
cells); the `fast` protocol's basis with few iterations keeps each fit to tens of seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from aiida import orm
from aiida.engine import run_get_node

from aiida_pyacemaker.calculations.pacemaker import (
    DRIVER,
    INPUT_FILE,
    PREVIOUS,
    TEST_XYZ,
    TRAIN_XYZ,
    PacemakerCalculation,
    build_input_yaml,
)
from aiida_pyacemaker.data import AcePotentialData, LabelledStructuresData
from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain

from ..conftest import FIXTURES

ENTRY_POINT = "pyacemaker.pacemaker"
POTENTIAL_FILES = FIXTURES / "pyacemaker_pacemaker" / "_potential"
FAST = PacemakerBaseWorkChain.get_protocol_inputs("fast")["pacemaker"]["parameters"]
FIT = {**FAST, "maxiter": 40, "warm_start_maxiter": 15}


@pytest.fixture
def small_sets(si_dft_set):
    """Four training and two test structures (pw.x labels), training rows from DFT, one replay row weighted 0.5."""
    train = LabelledStructuresData.from_atoms(si_dft_set[:4], source="dft", weight=[1.0, 1.0, 1.0, 0.5])
    test = LabelledStructuresData.from_atoms(si_dft_set[28:30], source="dft")
    return train, test


@pytest.fixture
def tiny_potential():
    """A real tiny Si potential (6 functions, 20 BFGS iterations on si_dft.xyz), as the parser tests use."""
    return AcePotentialData.from_files(
        POTENTIAL_FILES / "output_potential.yaml", POTENTIAL_FILES / "output_potential.yace"
    )


# --- offline: prepare_for_submission --------------------------------------------------------------------------------


def submission_record(folder, calcinfo) -> dict:
    """What the job runs and which files it writes and retrieves (no uuids, no absolute paths)."""
    from importlib import resources

    from ase.io import read

    (codeinfo,) = calcinfo.codes_info
    driver = resources.files("aiida_pyacemaker.executables").joinpath(DRIVER).read_text()
    with folder.open(DRIVER) as handle:
        assert handle.read() == driver, "the job folder must hold the package's standalone driver unchanged"
    with folder.open(INPUT_FILE) as handle:
        input_yaml = yaml.safe_load(handle)
    frames = {}
    for name in (TRAIN_XYZ, TEST_XYZ):
        if name in folder.get_content_list():
            with folder.open(name) as handle:
                structures = read(handle, index=":", format="extxyz")
            frames[name] = {
                "frames": len(structures),
                "w_factor": [float(atoms.info["w_factor"]) for atoms in structures],
                "labelled": all("REF_energy" in atoms.info and "REF_forces" in atoms.arrays for atoms in structures),
            }
    return {
        "cmdline_params": list(codeinfo.cmdline_params),
        "stdout_name": codeinfo.stdout_name,
        "retrieve_list": list(calcinfo.retrieve_list),
        "sandbox_files": sorted(folder.get_content_list()),
        "input_yaml": input_yaml,
        "frames": frames,
    }


def test_prepare_for_submission_from_scratch(
    fixture_sandbox, fixture_code, generate_calc_job, small_sets, data_regression
):
    """From scratch: the full basis in input.yaml, ZBL core added (``repulsion: auto``), source weight in w_factor."""
    inputs = {"code": fixture_code(ENTRY_POINT), "training_set": small_sets[0], "parameters": orm.Dict(FAST)}
    record = submission_record(fixture_sandbox, generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs))
    assert record["input_yaml"]["potential"]["elements"] == ["Si"]
    assert record["input_yaml"]["fit"]["repulsion"] == "auto"
    assert record["frames"][TRAIN_XYZ]["w_factor"] == [2.0, 2.0, 2.0, 1.0]  # dft weight 2 x row weight
    assert "interim_potential_*.yaml" in record["retrieve_list"]
    data_regression.check(record)


def test_prepare_for_submission_warm_start(
    fixture_sandbox, fixture_code, generate_calc_job, small_sets, tiny_potential, data_regression
):
    """Warm start: ``potential: previous.yaml`` (the node's YAML), its reference energies, fewer iterations."""
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "training_set": small_sets[0],
        "previous_potential": tiny_potential,
        "parameters": orm.Dict(FAST),
    }
    record = submission_record(fixture_sandbox, generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs))
    with fixture_sandbox.open(PREVIOUS) as handle:
        assert handle.read() == tiny_potential.get_yaml()
    assert record["input_yaml"]["potential"] == PREVIOUS
    assert record["input_yaml"]["data"]["reference_energy"] == tiny_potential.reference_energy
    assert record["input_yaml"]["fit"]["maxiter"] == FAST["warm_start_maxiter"]
    assert "repulsion" not in record["input_yaml"]["fit"]
    assert record["cmdline_params"][-3:] == ["--previous", PREVIOUS, "--active-set"]
    data_regression.check(record)


def test_prepare_for_submission_test_set(fixture_sandbox, fixture_code, generate_calc_job, small_sets, data_regression):
    """A test set travels as test.xyz and becomes ``data.test_filename``; settings the restart wrapper uses."""
    train, test = small_sets
    parameters = {**FAST, "optimizer_options": {"c1": 0.5}, "active_set": True}
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "training_set": train,
        "test_set": test,
        "parameters": orm.Dict(parameters),
    }
    record = submission_record(fixture_sandbox, generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs))
    assert record["input_yaml"]["data"]["test_filename"] == "test.pckl.gzip"
    assert record["frames"][TEST_XYZ]["frames"] == 2
    assert record["input_yaml"]["fit"]["options"] == {"gtol": 1e-8, "disp": True, "c1": 0.5}
    assert "--active-set" in record["cmdline_params"]
    data_regression.check(record)


def test_input_yaml_for_scratch_warm_start_and_ladder():
    scratch = build_input_yaml(FIT, ["Si"], has_test_set=True, warm_start=False)
    assert scratch["potential"]["elements"] == ["Si"]
    assert scratch["data"] == {
        "filename": "train.pckl.gzip",
        "test_filename": "test.pckl.gzip",
        "reference_energy": "auto",
    }
    assert scratch["fit"]["maxiter"] == 40
    assert scratch["fit"]["repulsion"] == "auto"
    assert "options" not in scratch["fit"]  # pacemaker's own minimiser defaults
    warm = build_input_yaml(FIT, ["Si"], has_test_set=False, warm_start=True, reference_energy={"Si": -1.0})
    assert warm["potential"] == "previous.yaml"
    assert warm["fit"]["maxiter"] == 15
    assert warm["data"]["reference_energy"] == {"Si": -1.0}
    assert "repulsion" not in warm["fit"]
    ladder = build_input_yaml({**FIT, "ladder_step": 10}, ["Si"], has_test_set=False, warm_start=False, ladder=True)
    assert ladder["potential"]["initial_potential"] == "initial.yaml"
    assert ladder["fit"]["ladder_step"] == 10
    assert "repulsion" not in ladder["fit"]


def test_input_yaml_restart_settings():
    """What the restart wrapper sets: the ZBL core after a continued interim fit, the line search's c1."""
    continued = build_input_yaml({**FIT, "repulsion": "auto"}, ["Si"], has_test_set=False, warm_start=True)
    assert continued["fit"]["repulsion"] == "auto"
    bare = build_input_yaml({**FIT, "repulsion": "none"}, ["Si"], has_test_set=False, warm_start=False)
    assert "repulsion" not in bare["fit"]
    stricter = build_input_yaml({**FIT, "optimizer_options": {"c1": 0.5, "gtol": 1e-6}}, ["Si"], False, False)
    assert stricter["fit"]["options"] == {"gtol": 1e-6, "disp": True, "c1": 0.5}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"maxiters": 10}, "unknown key `maxiters`"),
        ({"kappa": 2.0}, "parameters.kappa"),
        ({"backend": "jax"}, "parameters.backend"),
        ({"source_weights": {"vasp": 1.0}}, "parameters.source_weights"),
        ({"optimizer_options": {"maxiter": 10}}, "parameters.optimizer_options"),
        ({"optimizer_options": {"c1": 0.95}}, "parameters.optimizer_options"),
        ({"repulsion": "zbl"}, "parameters.repulsion"),
    ],
)
def test_bad_fit_settings_are_refused_at_submission(fixture_code, generate_calc_job, small_sets, parameters, message):
    inputs = {"code": fixture_code(ENTRY_POINT), "training_set": small_sets[0], "parameters": orm.Dict(parameters)}
    with pytest.raises(ValueError, match=message):
        generate_calc_job(None, ENTRY_POINT, inputs)


def test_elements_outside_the_previous_potential_are_refused(fixture_code, generate_calc_job, tiny_potential):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    copper.calc = EMT()
    copper.get_potential_energy()
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "training_set": LabelledStructuresData.from_atoms([copper]),
        "previous_potential": tiny_potential,
        "parameters": orm.Dict(FAST),
    }
    with pytest.raises(ValueError, match=r"no basis for \['Cu'\]"):
        generate_calc_job(None, ENTRY_POINT, inputs)


# --- slow: real pacemaker ---------------------------------------------------------------------------------------


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
    # pacemaker's interim potentials are retrieved (a stopped fit continues from them), not made outputs.
    retrieved = node.outputs.retrieved.base.repository.list_object_names()
    assert "interim_potential_best_cycle.yaml" in retrieved and "interim_potential" not in node.outputs

    potential = node.outputs.potential
    assert isinstance(potential, AcePotentialData)
    assert potential.elements == ["Si"] and potential.cutoff == pytest.approx(5.0)
    assert potential.num_functions > 0 and "Si" in potential.reference_energy
    # Every protocol builds the active set: evaluations report the extrapolation grade gamma.
    assert set(potential.base.repository.list_object_names()) == {"potential.yaml", "potential.yace", "potential.asi"}
    assert potential.has_yace and potential.has_active_set and not potential.is_interim
    # The driver moved pacemaker's ACE-to-ZBL blend below the data: r_in lowered by 0.2 A, blended over 0.3 A.
    delta_in = [float(line.split(":")[1]) for line in potential.get_yaml().splitlines() if "delta_in:" in line]
    assert delta_in and all(value == pytest.approx(0.3) for value in delta_in)
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
def test_driver_stopped_by_sigterm_leaves_a_complete_interim_potential(si_dft_set, tmp_path):
    """A scheduler's SIGTERM to the driver: pacemaker is stopped gently (SIGINT), so the interim potential it was
    saving is complete; error.json says ``fit_interrupted`` and the driver exits 128 + 15."""
    import json
    import signal
    import subprocess
    import sys
    import time
    from importlib import resources

    from ase.io import write

    from aiida_pyacemaker.parsers.pacemaker import interim_time

    structures = []
    for atoms in si_dft_set[:28]:
        atoms = atoms.copy()
        atoms.info = {"REF_energy": atoms.info["REF_energy"]}
        structures.append(atoms)
    write(tmp_path / TRAIN_XYZ, structures, format="extxyz")
    tiny = {
        "number_of_functions_per_element": 6,
        "functions": {"ALL": {"nradmax_by_orders": [4, 2], "lmax_by_orders": [0, 1]}},
    }
    content = build_input_yaml({**FAST, **tiny, "maxiter": 5000}, ["Si"], has_test_set=False, warm_start=False)
    (tmp_path / INPUT_FILE).write_text(yaml.safe_dump(content, sort_keys=False))
    driver = resources.files("aiida_pyacemaker.executables").joinpath(DRIVER)
    process = subprocess.Popen([sys.executable, str(driver)], cwd=tmp_path)
    metrics = tmp_path / "metrics.txt"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 6:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert json.loads((tmp_path / "error.json").read_text())["error"] == "fit_interrupted"
    assert not (tmp_path / "output_potential.yaml").exists()
    interim = tmp_path / "interim_potential_0.yaml"
    assert interim_time(interim.read_text()), "the interim potential must be complete"
