"""``MaceCalculation``: the job's inputs (offline, against stored expectations) and, marked slow, real runs."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase import Atoms
from ase.build import bulk
from ase.stress import voigt_6_to_full_3x3_stress

from aiida_pyacemaker.calculations.mace import SCRIPT, STRUCTURES_FILE, MaceCalculation
from aiida_pyacemaker.data import MaceModelData, MaceResultsData, StructureSetData

from ..conftest import TINY_SI

ENTRY_POINT = "pyacemaker.mace"


def si_cells(count: int, seed: int = 7) -> list[Atoms]:
    """Rattled Si cells of 2, 8 and 64 atoms."""
    rng = np.random.default_rng(seed)
    shapes = [bulk("Si", "diamond", a=5.43), bulk("Si", "diamond", a=5.43, cubic=True)]
    shapes.append(bulk("Si", "diamond", a=5.43, cubic=True).repeat(2))
    cells = []
    for index in range(count):
        atoms = shapes[index % 3].copy()
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        cells.append(atoms)
    return cells


# --- offline: prepare_for_submission --------------------------------------------------------------------------------


def submission_record(folder, calcinfo) -> dict:
    """What the job will run and which files it gets, without uuids or absolute paths."""
    from importlib import resources

    (codeinfo,) = calcinfo.codes_info
    script = resources.files("aiida_pyacemaker.executables").joinpath(SCRIPT).read_text()
    with folder.open(SCRIPT) as handle:
        assert handle.read() == script, "the job folder must hold the package's standalone script unchanged"
    with folder.open(STRUCTURES_FILE) as handle:
        structures_xyz = handle.read()
    return {
        "cmdline_params": list(codeinfo.cmdline_params),
        "stdout_name": codeinfo.stdout_name,
        "local_copy_list": [[filename, target] for _, filename, target in calcinfo.local_copy_list],
        "retrieve_list": list(calcinfo.retrieve_list),
        "sandbox_files": sorted(folder.get_content_list()),
        "structures_xyz": structures_xyz.splitlines(),
    }


def test_prepare_for_submission_structure_set(
    fixture_sandbox, fixture_code, generate_calc_job, generate_structure, tiny_committee, data_regression
):
    """A ``structure_set`` and ``parameters``: defaults merged on the command line, one xyz frame per row."""
    nodes = [generate_structure("si2", seed=0), generate_structure("si2", seed=1)]
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "models": tiny_committee,
        "structure_set": StructureSetData.from_structures(nodes),
        "parameters": orm.Dict({"batch_size": 4, "dtype": "float32"}),
    }
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    record = submission_record(fixture_sandbox, calcinfo)
    assert "--batch-size=4" in record["cmdline_params"] and "--max-batch-atoms=512" in record["cmdline_params"]
    data_regression.check(record)


def test_prepare_for_submission_structures(
    fixture_sandbox, fixture_code, generate_calc_job, generate_structure, tiny_committee, data_regression
):
    """``structures`` nodes: frames in the order of the sorted link labels (the result rows' order)."""
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "models": tiny_committee,
        "structures": {"b_second": generate_structure("si2", seed=1), "a_first": generate_structure("si2", seed=0)},
    }
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    data_regression.check(submission_record(fixture_sandbox, calcinfo))


def test_model_node_is_deduplicated_and_describes_the_model(tiny_committee):
    model = tiny_committee["m0"]
    again = MaceModelData.from_file(TINY_SI / model.filename)
    assert again.pk == model.pk
    assert model.elements == ["Si"]
    assert model.r_max == pytest.approx(4.5)
    assert model.dtype == "float64"
    assert model.architecture.endswith("MACE")
    assert len(model.sha256) == 64


def test_aiida_refuses_to_store_a_structure_with_nan_positions():
    from aiida.common.exceptions import ValidationError

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.positions[1, 0] = np.nan
    with pytest.raises(ValidationError, match="nan"):
        orm.StructureData(ase=atoms).store()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"batch_sise": 4}, "unknown key `batch_sise`"),
        ({"dtype": "float16"}, "parameters.dtype"),
        ({"batch_size": 0}, "parameters.batch_size"),
        ({"device": "tpu"}, "parameters.device"),
    ],
)
def test_bad_parameters_are_refused_at_submission(fixture_code, tiny_committee, parameters, message):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "models": tiny_committee,
        "structures": {"s": orm.StructureData(ase=si_cells(1)[0])},
        "parameters": orm.Dict(parameters),
    }
    with pytest.raises(ValueError, match=message):
        run_get_node(MaceCalculation, **inputs)


@pytest.mark.parametrize(
    ("models", "parameters", "message"),
    [
        (["m0"], {}, "a single model .* needs `reference_structures`"),
        (["m0", "m1"], {"uncertainty": "latent"}, "needs `reference_structures`"),
        (["m0"], {"uncertainty": "committee"}, "committee needs two or more models"),
        (["m0"], {"uncertainty": "spread"}, "parameters.uncertainty"),
    ],
)
def test_an_uncertainty_the_models_cannot_give_is_refused_at_submission(
    fixture_code, tiny_committee, models, parameters, message
):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "models": {key: tiny_committee[key] for key in models},
        "structures": {"s": orm.StructureData(ase=si_cells(1)[0])},
        "parameters": orm.Dict(parameters),
    }
    with pytest.raises(ValueError, match=message):
        run_get_node(MaceCalculation, **inputs)


def test_reference_structures_are_written_for_the_latent_distance(
    fixture_sandbox, generate_calc_job, fixture_code, tiny_committee
):
    inputs = {
        "code": fixture_code(ENTRY_POINT),
        "models": {"m0": tiny_committee["m0"]},
        "structure_set": StructureSetData.from_atoms(si_cells(2)),
        "reference_structures": StructureSetData.from_atoms(si_cells(3, seed=1)),
    }
    calcinfo = generate_calc_job(fixture_sandbox, ENTRY_POINT, inputs)
    arguments = calcinfo.codes_info[0].cmdline_params
    assert arguments[arguments.index("--reference") + 1] == "reference.xyz"
    from ase.io import read

    written = read(fixture_sandbox.get_abs_path("reference.xyz"), index=":")
    assert len(written) == 3 and not written[0].info


def test_structures_must_come_in_exactly_one_form(fixture_code, tiny_committee):
    code = fixture_code(ENTRY_POINT)
    with pytest.raises(ValueError, match="either as `structures`"):
        run_get_node(MaceCalculation, code=code, models=tiny_committee, structures={})
    atoms = si_cells(1)[0]
    with pytest.raises(ValueError, match="either as `structures`"):
        run_get_node(
            MaceCalculation,
            code=code,
            models=tiny_committee,
            structures={"a": orm.StructureData(ase=atoms)},
            structure_set=StructureSetData.from_atoms([atoms]),
        )


# --- slow: the real committee script ---------------------------------------------------------------------------------


def run_committee(code, models: dict, atoms_list: list[Atoms], **parameters):
    structures = {f"s{index:04d}": orm.StructureData(ase=atoms) for index, atoms in enumerate(atoms_list)}
    inputs = {"code": code, "models": models, "structures": structures}
    if parameters:
        inputs["parameters"] = orm.Dict(parameters)
    _, node = run_get_node(MaceCalculation, **inputs)
    return node, structures


def model_files(models: dict, folder) -> list[str]:
    """Local copies of the models' files, for the in-process calculator."""
    paths = []
    for key in sorted(models):
        path = folder / f"{key}.model"
        path.write_bytes(models[key].get_content(mode="rb"))
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_committee_matches_mace_calculator_in_process(mace_code, tiny_committee, tmp_path):
    from mace.calculators import MACECalculator

    atoms_list = si_cells(6)
    node, structures = run_committee(mace_code, tiny_committee, atoms_list, batch_size=4)
    assert node.is_finished_ok, node.exit_message
    results = node.outputs.results
    assert isinstance(results, MaceResultsData)
    assert results.status_counts == {"ok": 6}
    # The engine adds the scheduler's files to the retrieve list: the parser's kill/OOM check reads the stderr.
    assert "_scheduler-stderr.txt" in node.outputs.retrieved.base.repository.list_object_names()

    calculator = MACECalculator(
        model_paths=model_files(tiny_committee, tmp_path), device="cpu", default_dtype="float64"
    )
    for index, atoms in enumerate(atoms_list):
        record = results.for_structure(structures[f"s{index:04d}"])
        atoms = atoms.copy()
        atoms.calc = calculator
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        assert record["status"] == "ok"
        assert record["energy"] == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(record["forces"], forces, atol=1e-6)
        np.testing.assert_allclose(record["energy_per_model"], calculator.results["energy_comm"], atol=1e-6)
        np.testing.assert_allclose(record["stress"], voigt_6_to_full_3x3_stress(atoms.get_stress()), atol=1e-6)
        # The uncertainty by hand: per-atom norm of the committee's force std, maximum over atoms.
        by_hand = np.linalg.norm(np.asarray(calculator.results["forces_comm"]).std(axis=0), axis=1)
        assert record["uncertainty"] == pytest.approx(by_hand.max(), rel=1e-6)
        assert record["mean_force_std"] == pytest.approx(by_hand.mean(), rel=1e-6)
        energy_std = np.std(calculator.results["energy_comm"]) / len(atoms)
        assert record["energy_std_per_atom"] == pytest.approx(energy_std, rel=1e-6)
        assert record["uncertainty"] > 0


def bad_structures() -> dict[str, Atoms]:
    """One structure per status the committee script must recognise, and a good one."""
    good = si_cells(1, seed=11)[0]
    nan_cell = bulk("Si", "diamond", a=5.43, cubic=True)
    nan_cell.positions[3, 1] = np.nan
    close = bulk("Si", "diamond", a=5.43, cubic=True)
    close.positions[1] = close.positions[0] + [0.1, 0.0, 0.0]
    return {
        "ok": good,
        "unknown_element": bulk("Cu", "fcc", a=3.6, cubic=True),
        "empty": Atoms(cell=np.eye(3) * 5.0, pbc=True),
        "nonfinite": nan_cell,
        "too_close": close,
        "isolated_atom": Atoms("Si", positions=[[5, 5, 5]], cell=np.eye(3) * 15.0, pbc=True),
        "isolated_in_vacuum": Atoms("Si2", positions=[[0, 0, 0], [9, 0, 0]], pbc=False),
    }


@pytest.mark.slow
def test_unphysical_structures_get_a_status_and_leave_the_batch_intact(mace_code, tiny_committee):
    cases = bad_structures()
    structure_set = StructureSetData.from_atoms(list(cases.values())).store()
    _, node = run_get_node(MaceCalculation, code=mace_code, models=tiny_committee, structure_set=structure_set)
    assert node.is_finished_ok, node.exit_message
    results = node.outputs.results
    expected = {**{name: name for name in cases}, "isolated_in_vacuum": "isolated_atom"}
    for row, name in enumerate(cases):
        record = results.record(row)
        assert record["status"] == expected[name], name
        if name == "ok":
            assert np.isfinite(record["uncertainty"]) and np.isfinite(record["energy"])
        else:
            assert record["uncertainty"] == np.inf, name
    alone, alone_structures = run_committee(mace_code, tiny_committee, [cases["ok"]])
    reference = alone.outputs.results.for_structure(alone_structures["s0000"])
    batched = results.record(0)
    assert batched["energy"] == pytest.approx(reference["energy"], abs=1e-8)
    np.testing.assert_allclose(batched["forces"], reference["forces"], atol=1e-8)


@pytest.mark.slow
def test_structure_set_and_structure_nodes_give_the_same_rows(mace_code, tiny_committee):
    atoms_list = si_cells(3, seed=5)
    by_nodes, structures = run_committee(mace_code, tiny_committee, atoms_list)
    nodes = [structures[key] for key in sorted(structures)]
    structure_set = StructureSetData.from_structures(nodes).store()
    _, by_set = run_get_node(MaceCalculation, code=mace_code, models=tiny_committee, structure_set=structure_set)
    assert by_set.is_finished_ok, by_set.exit_message
    for row, structure in enumerate(nodes):
        from_set = by_set.outputs.results.for_structure(structure)  # the set kept the node's uuid
        assert from_set["key"] == str(row)
        from_nodes = by_nodes.outputs.results.for_structure(structure)
        assert from_set["energy"] == pytest.approx(from_nodes["energy"], abs=1e-8)
        assert from_set["uncertainty"] == pytest.approx(from_nodes["uncertainty"], rel=1e-8)


@pytest.mark.slow
def test_standalone_script_flags_nan_positions_without_aiida(tiny_committee, tmp_path):
    """The committee script runs in a bare Python (no AiiDA import) and marks NaN positions ``nonfinite``."""
    import subprocess
    import sys
    from importlib import resources

    from ase.io import write

    nan_cell = bulk("Si", "diamond", a=5.43, cubic=True)
    nan_cell.positions[3, 1] = np.nan
    write(tmp_path / "in.xyz", [si_cells(1)[0], nan_cell], format="extxyz")
    script = resources.files("aiida_pyacemaker.executables").joinpath(SCRIPT)
    models = model_files(tiny_committee, tmp_path)
    blocker = tmp_path / "no_aiida"
    blocker.mkdir()
    (blocker / "aiida.py").write_text("raise ImportError('the committee script must not import aiida')\n")
    completed = subprocess.run(
        [sys.executable, str(script), "--structures", "in.xyz", "--models", *models, "--output", "out.npz"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    with np.load(tmp_path / "out.npz") as results:
        assert results["status"].tolist() == ["ok", "nonfinite"]
        assert np.isfinite(results["uncertainty"][0]) and results["uncertainty"][1] == np.inf


@pytest.mark.slow
def test_one_model_gives_its_latent_distance_to_the_reference(mace_code, tiny_committee):
    structures = {f"s{index:04d}": orm.StructureData(ase=atoms) for index, atoms in enumerate(si_cells(2))}
    reference = StructureSetData.from_atoms(si_cells(4, seed=3))
    _, node = run_get_node(
        MaceCalculation,
        code=mace_code,
        models={"m0": tiny_committee["m0"]},
        structures=structures,
        reference_structures=reference,
    )
    assert node.is_finished_ok, node.exit_message
    results = node.outputs.results
    assert results.uncertainty_kind == "latent"
    record = results.for_structure(structures["s0000"])
    assert record["status"] == "ok" and np.isfinite(record["energy"])
    assert record["uncertainty"] == record["latent_distance"] > 0
    assert np.isnan(record["force_std"])  # no committee spread with one model


@pytest.mark.slow
def test_broken_model_file_fails_the_job_with_its_exit_code(mace_code, tiny_committee, tmp_path):
    broken_file = tmp_path / "broken.model"
    broken_file.write_bytes(b"this is not a torch file")
    broken = MaceModelData(file=broken_file)
    broken.base.attributes.set("r_max", 4.5)
    broken.store()
    node, _ = run_committee(mace_code, {"m0": tiny_committee["m0"], "m1": broken}, si_cells(1))
    assert node.exit_status == MaceCalculation.exit_codes.ERROR_MODEL_UNREADABLE.status
    assert "broken" in node.exit_message or "model_m1" in node.exit_message
