"""The oracle's calcfunctions offline: the routing decision (made once) and the assembly of both tiers' labels."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import calcfunction
from ase.build import bulk

from aiida_pyacemaker.calculations.functions.oracle import assemble_labels, route_structures, split_structure_set
from aiida_pyacemaker.data import MaceResultsData, StructureSetData

UNCERTAINTY = [0.01, 0.5, 0.9, 0.05, 0.15]
STATUS = ["ok", "ok", "ok", "too_close", "ok"]
SETTINGS = {"accept": 0.1, "call_dft": 0.2, "policy": "discard", "max_dft_calls": 2}


@calcfunction
def teacher_results(structure_set: StructureSetData) -> MaceResultsData:
    """Results as the parser makes them, with chosen uncertainties (energy -4 eV/atom, zero force and stress)."""
    atoms = structure_set.to_atoms()
    sizes = np.array([len(a) for a in atoms])
    results = MaceResultsData()
    results.set_array("status", np.array(STATUS, dtype="<U32"))
    results.set_array("n_atoms", sizes)
    results.set_array("atom_offsets", np.concatenate([[0], np.cumsum(sizes)]))
    results.set_array("energy", -4.0 * sizes.astype(float))
    results.set_array("forces", np.zeros((sizes.sum(), 3)))
    results.set_array("stress", np.zeros((len(atoms), 3, 3)))
    results.set_array("energy_per_model", np.tile(-4.0 * sizes.astype(float), (2, 1)))
    results.set_array("forces_per_model", np.zeros((2, sizes.sum(), 3)))
    results.set_array("uncertainty", np.array(UNCERTAINTY))
    results.set_array("energy_std_per_atom", np.zeros(len(atoms)))
    results.set_array("mean_force_std", np.zeros(len(atoms)))
    results.set_array("keys", np.array([str(i) for i in range(len(atoms))], dtype="<U255"))
    results.set_array("structure_uuids", np.array(structure_set.get_array("structure_uuids"), dtype="<U36"))
    results.base.attributes.set("num_structures", len(atoms))
    results.base.attributes.set("uncertainty_kind", "committee")
    return results


@calcfunction
def pw_outputs(energy: orm.Float, atoms: orm.Int) -> dict:
    """``output_parameters`` and ``output_trajectory`` of a pw.x run, as the DFT tier hands them over."""
    trajectory = orm.ArrayData()
    trajectory.set_array("forces", np.full((1, atoms.value, 3), 0.1))
    trajectory.set_array("stress", np.zeros((1, 3, 3)))
    return {"parameters": orm.Dict({"energy": energy.value}), "trajectory": trajectory}


@pytest.fixture
def candidates() -> StructureSetData:
    structures = []
    for seed in range(len(UNCERTAINTY)):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.positions += np.random.default_rng(seed).normal(scale=0.02, size=atoms.positions.shape)
        structures.append(atoms)
    return StructureSetData.from_atoms(structures).store()


def test_routing_is_decided_once_and_dft_structures_descend_from_it(candidates):
    results = teacher_results(candidates)
    outputs, node = route_structures.run_get_node(candidates, orm.Dict(SETTINGS), mace_chunk_00000=results)
    routes = outputs["routing"].get_array("route").tolist()
    assert routes == ["mace", "dft", "dft", "rejected", "deferred"]
    assert outputs["routing"].base.attributes.get("counts") == {"dft": 2, "deferred": 1, "mace": 1, "rejected": 1}
    assert sorted(label for label in outputs if label.startswith("dft_row_")) == ["dft_row_000001", "dft_row_000002"]
    assert outputs["dft_row_000002"].creator.pk == node.pk
    positions = outputs["dft_row_000002"].get_ase().positions
    assert np.allclose(positions, candidates.to_atoms()[2].positions)


def test_assembly_labels_both_tiers_on_one_reference_and_records_a_failed_dft_row(candidates):
    results = teacher_results(candidates)
    decision = route_structures(candidates, orm.Dict(SETTINGS), mace_chunk_00000=results)
    dft = pw_outputs(orm.Float(-33.6), orm.Int(8))  # row 1: 0.2 eV/atom below the teacher
    outputs = assemble_labels(
        candidates,
        decision["routing"],
        mace_chunk_00000=results,
        dft_parameters_000001=dft["parameters"],
        dft_trajectory_000001=dft["trajectory"],
    )
    assert outputs["routing"].get_array("route").tolist() == ["mace", "dft", "dft_failed", "rejected", "deferred"]
    assert outputs["energy_reference"]["shift_per_atom"]["Si"] == pytest.approx(-0.2)
    assert outputs["energy_reference"]["fitted_on_dft_structures"] == 1
    labelled = outputs["labelled"]
    assert labelled.get_array("source").tolist() == ["mace", "dft"]
    assert labelled.get_array("energy").tolist() == pytest.approx([-33.6, -33.6])  # the teacher row, shifted
    assert len(outputs["rejected"]) == 1 and len(outputs["deferred"]) == 1
    producers = labelled.get_array("producer_uuids").tolist()
    assert producers == [results.creator.uuid, dft["parameters"].creator.uuid]


def test_without_dft_the_last_energy_reference_is_used(candidates):
    results = teacher_results(candidates)
    settings = {**SETTINGS, "max_dft_calls": 0}
    decision = route_structures(candidates, orm.Dict(settings), mace_chunk_00000=results)
    reference = orm.Dict({"shift_per_atom": {"Si": 0.1}, "fitted_on_dft_structures": 3, "unit": "eV/atom"})
    outputs = assemble_labels(candidates, decision["routing"], mace_chunk_00000=results, energy_reference=reference)
    assert outputs["routing"].base.attributes.get("counts")["over_budget"] == 2
    assert outputs["labelled"].get_array("energy").tolist() == pytest.approx([-32.0 + 0.8])
    assert outputs["energy_reference"]["fitted_on_dft_structures"] == 3  # carried over with its count


def test_chunks_keep_the_row_order(candidates):
    chunks = split_structure_set(candidates, orm.Int(2))
    assert sorted(chunks) == ["chunk_00000", "chunk_00001", "chunk_00002"]
    sizes = [len(chunks[key]) for key in sorted(chunks)]
    assert sizes == [2, 2, 1]


def test_calibration_rows_go_to_dft_first_and_count_against_the_budget(candidates):
    from aiida_pyacemaker.calculations.functions.oracle import calibrate_teacher, select_calibration_rows

    results = teacher_results(candidates)
    selection = select_calibration_rows(candidates, orm.Int(2), mace_chunk_00000=results)
    assert selection["calibration_rows"].get_array("rows").tolist() == [0, 2]  # lowest and highest usable u
    assert sorted(label for label in selection if label.startswith("dft_row_")) == ["dft_row_000000", "dft_row_000002"]

    dft = pw_outputs(orm.Float(-33.6), orm.Int(8))  # forces 0.1 per component: error sqrt(3) x 0.1 eV/A
    calibration = calibrate_teacher(
        mace_chunk_00000=results, dft_trajectory_000000=dft["trajectory"], dft_trajectory_000002=dft["trajectory"]
    )
    assert calibration["points"] == 2 and calibration["exponent"] == 1.0
    assert calibration["error"] == pytest.approx([0.1 * np.sqrt(3)] * 2)
    assert calibration["raw"] == pytest.approx([0.01, 0.9])

    settings = {**SETTINGS, "max_dft_calls": 3}
    outputs = route_structures(
        candidates,
        orm.Dict(settings),
        mace_chunk_00000=results,
        calibration=calibration,
        calibration_rows=selection["calibration_rows"],
    )
    routing = outputs["routing"]
    # calibrated u = a x raw with a = geometric mean of 0.173/0.01 and 0.173/0.9: row 1 (raw 0.5) and row 4 (raw
    # 0.15) are above 0.2; one DFT call is left after the two calibration rows: the more uncertain row 1.
    assert routing.get_array("route").tolist() == ["dft", "dft", "dft", "rejected", "over_budget"]
    assert routing.get_array("calibration_row").tolist() == [True, False, True, False, False]
    assert routing.get_array("raw_uncertainty").tolist() == UNCERTAINTY
    assert routing.get_array("uncertainty")[1] == pytest.approx(calibration["prefactor"] * 0.5)
    assert routing.base.attributes.get("calibrated") is True
    assert sorted(label for label in outputs if label.startswith("dft_row_")) == ["dft_row_000001"]  # only the new


def test_the_assembled_routing_keeps_the_teacher_error_of_dft_rows(candidates):
    results = teacher_results(candidates)
    decision = route_structures(candidates, orm.Dict(SETTINGS), mace_chunk_00000=results)
    dft = pw_outputs(orm.Float(-33.6), orm.Int(8))
    outputs = assemble_labels(
        candidates,
        decision["routing"],
        mace_chunk_00000=results,
        dft_parameters_000001=dft["parameters"],
        dft_trajectory_000001=dft["trajectory"],
    )
    error = outputs["routing"].get_array("teacher_force_error")
    assert error[1] == pytest.approx(0.1 * np.sqrt(3))
    assert np.isnan(error[[0, 2, 3, 4]]).all()
    assert outputs["routing"].get_array("raw_uncertainty").tolist() == UNCERTAINTY
