"""A real PwBaseWorkChain through the daemon of the ZeroMQ test profile, checked against a direct pw.x run."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from qe_tools import CONSTANTS

from aiida_pyacemaker.dft import get_pw_builder, pw_label

# The same constants aiida-quantumespresso's parser converts with, so that only the numbers pw.x printed differ.
RY_IN_EV = CONSTANTS.ry_to_ev
BOHR_IN_A = CONSTANTS.bohr_to_ang

pytestmark = [pytest.mark.slow, pytest.mark.daemon]


def run_pw_directly(input_text: str, pseudos: dict, workdir) -> tuple[float, np.ndarray]:
    """Run pw.x on ``input_text`` in ``workdir``; return the energy (eV) and forces (eV/A) it prints."""
    (workdir / "pseudo").mkdir()
    for pseudo in pseudos.values():
        (workdir / "pseudo" / pseudo.filename).write_bytes(pseudo.get_content(mode="rb"))
    (workdir / "aiida.in").write_text(input_text)
    completed = subprocess.run(
        ["pw.x", "-in", "aiida.in"], cwd=workdir, capture_output=True, text=True, check=True, timeout=300
    )
    energy_ry = float(re.search(r"^!\s+total energy\s+=\s+(\S+) Ry", completed.stdout, re.M).group(1))
    forces = [
        [float(value) for value in match]
        for match in re.findall(r"atom\s+\d+ type\s+\d+\s+force =\s+(\S+)\s+(\S+)\s+(\S+)", completed.stdout)
    ]
    n_atoms = int(re.search(r"number of atoms/cell\s+=\s+(\d+)", completed.stdout).group(1))
    # The total forces come first; pw.x then prints their contributions (local, non-local, ...).
    return energy_ry * RY_IN_EV, np.array(forces[:n_atoms]) * RY_IN_EV / BOHR_IN_A


def test_pw_base_work_chain_on_the_daemon_matches_direct_pw(
    submit_and_await, pw_code, pseudo_family, generate_structure, tmp_path
):
    structure = generate_structure("si2", displacement=0.06, seed=3)
    builder = get_pw_builder(pw_code, structure, pseudo_family.label, stringency="low")
    node = submit_and_await(builder, timeout=300)

    assert node.is_finished_ok, node.exit_message
    label = pw_label(node)
    assert label["forces"].shape == (2, 3)
    assert np.abs(label["forces"]).max() > 0.05  # the displaced cell has real forces
    assert label["stress"].shape == (3, 3)

    calculation = node.called[-1]
    parameters = calculation.inputs.parameters.get_dict()
    assert parameters["SYSTEM"]["ecutwfc"] == 30.0
    assert calculation.inputs.code.uuid == pw_code.uuid

    input_text = calculation.base.repository.get_object_content("aiida.in")
    energy, forces = run_pw_directly(input_text, dict(calculation.inputs.pseudos), tmp_path)
    assert label["energy"] == pytest.approx(energy, abs=1e-5)
    np.testing.assert_allclose(label["forces"], forces, atol=1e-4)
    # Newton's third law in a 2-atom cell: the forces cancel.
    np.testing.assert_allclose(label["forces"].sum(axis=0), 0.0, atol=1e-3)


def test_compressed_cell_has_negative_stress_in_the_plugin_convention(
    submit_and_await, pw_code, pseudo_family, generate_structure
):
    structure = generate_structure("si2", displacement=0.0, a=5.20)
    node = submit_and_await(get_pw_builder(pw_code, structure, pseudo_family.label, stringency="low"), timeout=300)
    assert node.is_finished_ok, node.exit_message
    # ASE convention: a cell squeezed well below the PBE lattice constant pushes outwards -> negative diagonal.
    assert np.all(label_diag := pw_label(node)["stress"].diagonal() < -0.01), label_diag
