"""The distillation loop on a second element: copper (a metal), from the campaign file ``examples/cu_distillation.yaml``
with the tiny Cu committee (``models/tiny-cu``, built by ``scripts/build_tiny_committee.py --element Cu``)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY_CU = ROOT / "models" / "tiny-cu"
CAMPAIGN_FILE = ROOT / "examples" / "cu_distillation.yaml"
#: The final ACE force RMSE on the held-out Cu set (meV/A) must be below this absolute bound (the `balanced`
#: protocol's bound of a usable potential, max_test_force_rmse) ...
MAX_FORCE_RMSE = 300.0
#: ... and within this factor of the teacher's own error (29 meV/A for the committed committee): the student learns
#: from the teacher's labels (plus 3 DFT cells) with a 20-function basis; three times the teacher's error is a
#: student that learnt, a blow-up is a hundred times more.
MAX_RATIO_TO_TEACHER = 3.0
#: No held-out cell may have a force component off by more than this (eV/A); the largest DFT component is 3.6 eV/A.
MAX_CELL_FORCE_ERROR = 1.0


@pytest.fixture
def codes(mace_code, pw_code, pacemaker_code, mace_train_code, pseudo_family):
    return {"mace": mace_code, "pw": pw_code, "pacemaker": pacemaker_code, "mace_train": mace_train_code}


def cu_config(campaign: str) -> dict:
    """The campaign file ``examples/cu_distillation.yaml``, as it is, under another campaign name."""
    from aiida_pyacemaker.config import load_config

    config = load_config(CAMPAIGN_FILE)
    config["campaign"] = campaign
    return config


def teacher_force_rmse(test_atoms: list) -> float:
    """The tiny Cu committee's own force RMSE (meV/A, committee mean) on the held-out set."""
    from mace.calculators import MACECalculator

    paths = [str(path) for path in sorted(TINY_CU.glob("mace_cu_tiny_s*.model"))]
    calculator = MACECalculator(model_paths=paths, device="cpu", default_dtype="float64")
    errors = []
    for atoms in test_atoms:
        reference = atoms.get_forces()
        probe = atoms.copy()
        probe.calc = calculator
        errors.append((probe.get_forces() - reference).ravel())
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2))) * 1000.0


def test_cu_campaign_file_sets_up_a_dft_tier_for_a_metal(codes):
    """Bands from the valence electrons of Cu.pbe-kjpaw (11 per atom), smearing for a metal, no element constant."""
    from aiida_pyacemaker.config import build_from_config

    committee = sorted(TINY_CU.glob("mace_cu_tiny_s*.model"))
    assert len(committee) == 3, f"tiny Cu committee missing in {TINY_CU}: run scripts/build_tiny_committee.py"
    builder = build_from_config(cu_config("cu-settings"))
    assert builder.prototypes.to_atoms()[0].get_chemical_symbols() == ["Cu"] * 4
    assert all(model.elements == ["Cu"] for model in builder.oracle.mace.mace.models.values())
    parameters = builder.oracle.dft.pw.parameters.get_dict()
    electrons = 4 * 11  # four Cu atoms, z_valence 11 in Cu.pbe-kjpaw.UPF
    assert parameters["SYSTEM"]["nbnd"] == int(np.ceil(max(1.5 * electrons / 2, electrons / 2 + 8))) == 33
    assert parameters["SYSTEM"]["occupations"] == "smearing"
    assert parameters["SYSTEM"]["smearing"] == "cold"
    assert parameters["SYSTEM"]["degauss"] == pytest.approx(0.0275)
    assert (parameters["SYSTEM"]["ecutwfc"], parameters["SYSTEM"]["ecutrho"]) == (30.0, 240.0)  # stringency `low`
    assert builder.oracle.dft.kpoints_distance.value == pytest.approx(0.45)  # as models/tiny-cu/cu_dft.xyz


@pytest.mark.slow
@pytest.mark.daemon
def test_loop_on_copper_with_real_pw(aiida_profile, daemon_client, submit_and_await, codes):
    """The campaign file ``examples/cu_distillation.yaml`` as a user runs it (protocol `fast`: a 30-cell pool, a DFT
    budget of 3, Phase 4), on the daemon with real pw.x: DFT labels arrive and the final ACE is sane on held-out Cu.

    The pool is the protocol's own: its size barely changes the run time (the teacher labels a 4-atom cell in
    milliseconds; pw.x calls are capped by the budget). Half of it (15 cells) gives a training set whose shortest
    distance (2.241 A) lies above that of one held-out cell (2.194 A), and ACE then blows up in pacemaker's ZBL
    switching zone (core repulsion: a separate issue); MAX_CELL_FORCE_ERROR catches that.
    """
    from aiida_pyacemaker.config import build_from_config
    from aiida_pyacemaker.evaluation import predictions
    from aiida_pyacemaker.workflows.incremental_training import IncrementalTrainingWorkChain
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    builder = build_from_config(cu_config("test-loop-cu"))
    if not daemon_client.is_daemon_running:
        daemon_client.start_daemon()
    node = submit_and_await(builder, timeout=1200)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    summary = node.outputs.summary.get_dict()
    first = summary["per_iteration"][0]
    tested = [record for record in summary["per_iteration"] if "test_force_rmse_mev_per_a" in record]
    final_rmse = tested[-1]["test_force_rmse_mev_per_a"]  # the iteration that made the final potential
    test_atoms = builder.test_set.to_atoms()
    teacher = teacher_force_rmse(test_atoms)
    rows = predictions(node.outputs.potential, builder.test_set)
    errors = [float(np.abs(row["forces"] - row["forces_ref"]).max()) for row in rows]
    worst = int(np.argmax(errors))
    rmses = [round(record["test_force_rmse_mev_per_a"], 1) for record in tested]
    print(
        f"\nCu loop: {summary['stop_reason']}; routes {[record['routes'] for record in summary['per_iteration']]}; "
        f"DFT calls {summary['dft_calls']}; test force RMSE {rmses} meV/A (teacher {teacher:.1f}); "
        f"largest force error {errors[worst]:.3f} eV/A on a {rows[worst]['domain']} "
        f"cell (DFT max |F| {np.abs(rows[worst]['forces_ref']).max():.3f} eV/A)"
    )

    # DFT labels arrived: pw.x ran on Cu (bands from the valence electrons, no "too few bands" failure) and fixed
    # the energy reference of the mixed MACE + DFT labels.
    assert first["routes"].get("dft", 0) >= 1 and "dft_failed" not in first["routes"], first["routes"]
    assert summary["dft_calls"] == first["routes"]["dft"] <= 3
    oracles = sorted((n for n in node.called if n.process_class is TieredOracleWorkChain), key=lambda n: n.pk)
    reference = oracles[0].outputs.energy_reference.get_dict()
    assert reference["fitted_on_dft_structures"] == first["routes"]["dft"] and set(reference["shift_per_atom"]) == {
        "Cu"
    }
    sources = oracles[0].outputs.labelled.get_array("source")
    assert (sources == "dft").sum() == first["routes"]["dft"]

    # The fit from scratch asked pacemaker for its ZBL inner core (`repulsion: auto`); the final potential has it.
    fits = sorted((n for n in node.called if n.process_class is IncrementalTrainingWorkChain), key=lambda n: n.pk)
    scratch = [n for n in fits[0].called_descendants if n.process_label == "PacemakerCalculation" and n.is_finished_ok]
    assert yaml.safe_load(scratch[0].base.repository.get_object_content("input.yaml"))["fit"]["repulsion"] == "auto"
    assert "inner_cutoff_type: zbl" in node.outputs.potential.get_yaml()

    # The final test error is sane: no blown-up cell, below an absolute bound and within a factor of the teacher's.
    assert len(rows) == len(test_atoms) == 15
    assert errors[worst] < MAX_CELL_FORCE_ERROR, (
        f"ACE blew up on held-out cell {worst}: largest force error {errors[worst]:.1f} eV/A"
    )
    assert np.isfinite(final_rmse) and final_rmse < MAX_FORCE_RMSE, final_rmse
    assert final_rmse < MAX_RATIO_TO_TEACHER * teacher, (final_rmse, teacher)
