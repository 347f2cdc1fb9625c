"""The committee script's uncertainty on real tiny MACE models: energy and stress spreads see what forces cannot
(a compressed perfect crystal), and a single model's latent distance to reference structures."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

TINY_SI = pathlib.Path(__file__).resolve().parents[2] / "models" / "tiny-si"


def compressed_crystal():
    """Perfect diamond Si at 50 % volume: nearest neighbours 1.18 A, zero force on every model by symmetry."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_cell(atoms.cell * 0.5 ** (1 / 3), scale_atoms=True)
    return atoms


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("committee")
    held_out = read(TINY_SI / "si_test.xyz", index=":3")
    rows = [*held_out, compressed_crystal(), bulk("Si", "diamond", a=5.43, cubic=True)]
    for atoms in rows:
        atoms.calc = None
        atoms.info = {}
    write(folder / "structures.xyz", rows, format="extxyz")
    reference = read(TINY_SI / "si_dft.xyz", index=":")
    for atoms in reference:
        atoms.calc = None
        atoms.info = {}
        atoms.arrays = {name: atoms.arrays[name] for name in ("numbers", "positions")}
    write(folder / "reference.xyz", reference, format="extxyz")
    return folder


def run_script(script, folder, models, *extra):
    models = [str(TINY_SI / f"mace_si_tiny_s{seed}.model") for seed in models]
    output = folder / f"results-{len(models)}-{len(extra)}.npz"
    arguments = ["--structures", str(folder / "structures.xyz"), "--models", *models, "--output", str(output)]
    script.main([*arguments, "--dtype", "float64", *extra])
    return dict(np.load(output))


def test_the_compressed_crystal_is_not_certain_for_a_committee(script, inputs):
    results = run_script(script, inputs, [0, 1, 2])
    assert str(results["uncertainty_kind"]) == "committee"
    compressed, perfect = 3, 4
    assert results["force_std"][compressed] < 1e-6  # the blind spot of the force spread
    assert results["uncertainty"][compressed] > 0.3  # energy and stress spreads see it
    assert results["uncertainty"][compressed] > 3 * results["uncertainty"][:3].max()
    assert results["uncertainty"][perfect] < 0.05
    assert np.isnan(results["latent_distance"][results["status"] == "ok"]).all()  # no reference given


def test_a_single_model_uses_its_latent_distance_to_the_reference(script, inputs):
    results = run_script(script, inputs, [0], "--reference", str(inputs / "reference.xyz"))
    assert str(results["uncertainty_kind"]) == "latent"
    assert np.isnan(results["force_std"]).all()
    distance = results["uncertainty"]
    np.testing.assert_array_equal(distance, results["latent_distance"])
    assert distance[3] > 10 * distance[:3].max()  # the compressed crystal is far from anything seen
    assert (distance[:3] > 0).all() and (distance[:3] < 1.0).all()


def test_a_single_model_without_reference_is_an_input_error(script, inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    with pytest.raises(SystemExit) as exit_info:
        run_script(script, inputs, [0])
    assert exit_info.value.code == script.EXIT_INPUT_UNREADABLE
    assert "needs --reference" in json.loads((inputs / "error.json").read_text())["message"]
