"""TieredOracleWorkChain: protocols and validation offline; on the daemon with the tiny committee and real pw.x,
thresholds that force every route."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.orm import QueryBuilder
from ase.build import bulk

from aiida_pyacemaker.calculations.mace import MaceCalculation
from aiida_pyacemaker.data import StructureSetData
from aiida_pyacemaker.protocols import builder_inputs
from aiida_pyacemaker.workflows.mace.base import MaceBaseWorkChain

ACCEPT, CALL_DFT = 0.02, 0.1


def rattled(scale: float, seed: int):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    return atoms


def candidates() -> list:
    """Committee uncertainties (eV/A), measured: 0.013, 0.013 | 0.030, 0.035 | 0.72, 0.72 (same cell), 0.17 | -
    (the first two: the stress spread, 0.066 eV/A at 1 A, over the 5 A length scale; the others: the force spread)."""
    close = bulk("Si", "diamond", a=5.43, cubic=True)
    close.positions[1] = close.positions[0] + [0.1, 0, 0]
    return [
        rattled(0.01, 0),
        rattled(0.02, 1),
        rattled(0.08, 1),
        rattled(0.10, 1),
        rattled(0.25, 0),
        rattled(0.25, 0),
        rattled(0.30, 1),
        close,
    ]


def oracle_inputs(mace_code, tiny_committee, structures, **extra):
    inputs = {
        "structures": structures,
        "mace": {"mace": {"code": mace_code, "models": tiny_committee}},
        "uncertainty_threshold": orm.Float(ACCEPT),
        "threshold_call_dft": orm.Float(CALL_DFT),
    }
    inputs.update(extra)
    return inputs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"uncertainty_threshold": 0.5}, "must be <= threshold_call_dft"),
        ({"middle_band_policy": "keep"}, "middle_band_policy must be one of"),
        ({}, "give the DFT tier inputs"),
    ],
)
def test_bad_oracle_inputs_are_refused_at_submission(mace_code, tiny_committee, extra, message):
    from aiida.engine import run

    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    structures = StructureSetData.from_atoms(candidates()[:2])
    extra = {key: orm.to_aiida_type(value) for key, value in extra.items()}
    with pytest.raises(ValueError, match=message):
        run(TieredOracleWorkChain, **oracle_inputs(mace_code, tiny_committee, structures, **extra))


@pytest.mark.parametrize("protocol", ["fast", "balanced", "stringent"])
def test_protocols_build_valid_inputs_and_the_dft_tier_follows(
    protocol, mace_code, tiny_committee, pw_code, pseudo_family, generate_workchain
):
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    structure = orm.StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    builder = TieredOracleWorkChain.get_builder_from_protocol(mace_code, tiny_committee, pw_code, structure, protocol)
    builder.structures = StructureSetData.from_atoms(candidates()[:2])
    process = generate_workchain("pyacemaker.tiered_oracle", builder_inputs(builder))
    inputs = process.inputs
    assert inputs.dft.pw.parameters["SYSTEM"]["nbnd"] == 24  # 8 Si x 4 valence electrons: max(1.5 x 16, 16 + 8)
    assert "structure" not in inputs.dft.pw
    kpoints = {"fast": 0.45, "balanced": 0.15, "stringent": 0.10}[protocol]
    assert inputs.dft.kpoints_distance.value == pytest.approx(kpoints)
    expected = {"fast": (0.25, 0.35), "balanced": (0.15, 0.25), "stringent": (0.08, 0.15)}[protocol]
    assert (inputs.uncertainty_threshold.value, inputs.threshold_call_dft.value) == expected
    assert set(inputs.mace.mace.models) == set(tiny_committee)


def test_unknown_protocol_and_override_keys_name_the_key(mace_code, tiny_committee):
    from aiida_pyacemaker.protocols import ProtocolError
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    with pytest.raises(ProtocolError, match="`precise-ish` is not one of"):
        TieredOracleWorkChain.get_builder_from_protocol(mace_code, tiny_committee, protocol="precise-ish")
    with pytest.raises(ProtocolError, match="`threshold` is not an input"):
        TieredOracleWorkChain.get_builder_from_protocol(mace_code, tiny_committee, overrides={"threshold": 0.1})
    with pytest.raises(ProtocolError, match="`uncertainty_threshold` = 'low' does not fit"):
        TieredOracleWorkChain.get_builder_from_protocol(
            mace_code, tiny_committee, overrides={"uncertainty_threshold": "low"}
        )


def test_one_model_needs_reference_structures(mace_code, tiny_committee):
    from aiida.engine import run

    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    inputs = oracle_inputs(
        mace_code, tiny_committee, StructureSetData.from_atoms(candidates()[:1]), max_dft_calls=orm.Int(0)
    )
    inputs["mace"]["mace"]["models"] = {"m0": tiny_committee["m0"]}
    with pytest.raises(ValueError, match="needs `reference_structures`"):
        run(TieredOracleWorkChain, **inputs)


def test_the_protocol_gives_a_single_model_its_reference(mace_code, tiny_committee):
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    structure = orm.StructureData(ase=candidates()[0])
    builder = TieredOracleWorkChain.get_builder_from_protocol(mace_code, {"m0": tiny_committee["m0"]}, None, structure)
    reference = builder.mace.mace.reference_structures
    assert len(reference) == 1 and builder.calibration_size.value == 4


@pytest.mark.slow
@pytest.mark.daemon
def test_every_route_on_the_daemon_with_real_pw(
    aiida_profile, daemon_client, submit_and_await, mace_code, tiny_committee, pw_code, pseudo_family
):
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    from aiida_pyacemaker.setup.caching import ensure_caching
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    ensure_caching(aiida_profile.name)  # the daemon reads it at start: restart it
    if daemon_client.is_daemon_running:
        daemon_client.restart_daemon(wait=True)
    atoms = candidates()
    structures = StructureSetData.from_atoms(atoms).store()
    overrides = {
        "uncertainty_threshold": ACCEPT,
        "threshold_call_dft": CALL_DFT,
        "middle_band_policy": "discard",
        "max_dft_calls": 2,
        "max_concurrent_dft": 1,
        "calibration_size": 0,  # thresholds on the raw committee spread, measured above
        "meta_parameters": {"pseudo_family": pseudo_family.label},
    }
    builder = TieredOracleWorkChain.get_builder_from_protocol(
        mace_code, tiny_committee, pw_code, orm.StructureData(ase=atoms[0]), "fast", overrides
    )
    builder.structures = structures
    node = submit_and_await(builder, timeout=900)
    assert node.is_finished_ok, node.exit_message

    routing = node.outputs.routing
    assert routing.get_array("route").tolist() == [
        "mace",
        "mace",
        "deferred",
        "deferred",
        "dft",
        "dft",
        "over_budget",
        "rejected",
    ]
    assert len(node.outputs.deferred) == 2 and len(node.outputs.rejected) == 1 and len(node.outputs.over_budget) == 1

    labelled = node.outputs.labelled
    assert labelled.get_array("source").tolist() == ["mace", "mace", "dft", "dft"]
    wrappers = [n for n in node.called if n.process_class is MaceBaseWorkChain]
    assert len(wrappers) == 1
    mace_jobs = [n for n in wrappers[0].called if n.process_class is MaceCalculation]
    assert len(mace_jobs) == 1
    dft_runs = sorted((n for n in node.called if n.process_class is PwBaseWorkChain), key=lambda n: n.pk)
    assert len(dft_runs) == 2
    # The identical structure is not computed twice: its PwCalculation comes from the cache.
    calculations = [run.called[-1] for run in dft_runs]
    assert calculations[1].base.caching.is_created_from_cache
    producers = labelled.get_array("producer_uuids").tolist()
    assert producers[:2] == [mace_jobs[0].uuid] * 2
    assert producers[2:] == [calc.uuid for calc in calculations]

    # One energy reference: the shift fitted on the DFT rows puts the MACE labels on the DFT scale.
    dft_energy = dft_runs[0].outputs.output_parameters["energy"]
    mace_energy = mace_jobs[0].outputs.results.record(4)["energy"]
    shift = node.outputs.energy_reference["shift_per_atom"]["Si"]
    assert shift == pytest.approx((dft_energy - mace_energy) / 8, abs=1e-8)
    energies = labelled.get_array("energy")
    assert energies[0] == pytest.approx(mace_jobs[0].outputs.results.record(0)["energy"] + 8 * shift, abs=1e-8)
    assert energies[2] == pytest.approx(dft_energy, abs=1e-8)

    # The routing decision is recorded once, and every DFT structure descends from it.
    (decision,) = [n for n in node.called if n.process_label == "route_structures"]
    for run in dft_runs:
        assert run.inputs.pw.structure.creator.pk == decision.pk

    # The documented query: structures of this run sent to DFT with an uncertainty above 0.5 eV/A.
    query = QueryBuilder()
    query.append(TieredOracleWorkChain, filters={"id": node.pk}, tag="oracle")
    query.append(PwBaseWorkChain, with_incoming="oracle", tag="dft")
    query.append(
        orm.StructureData, with_outgoing="dft", filters={"extras.pyacemaker_uncertainty": {">": 0.5}}, project="*"
    )
    assert query.count() == 2


def compressed_crystal():
    """Perfect diamond Si at 50 % volume (nearest neighbours 1.18 A): zero force on any model, by symmetry."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_cell(atoms.cell * 0.5 ** (1 / 3), scale_atoms=True)
    return atoms


@pytest.mark.slow
@pytest.mark.daemon
def test_one_foundation_model_routes_by_its_calibrated_latent_distance_with_real_pw(
    aiida_profile, daemon_client, submit_and_await, mace_code, foundation_model, pw_code, pseudo_family, tmp_path
):
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    from aiida_pyacemaker.plots import calibration_figure
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    if not daemon_client.is_daemon_running:
        daemon_client.start_daemon()
    atoms = [rattled(scale, seed) for seed, scale in enumerate((0.01, 0.03, 0.06, 0.1, 0.15, 0.2))]
    atoms.append(compressed_crystal())
    overrides = {
        "max_dft_calls": 4,
        "calibration_size": 3,
        "max_concurrent_dft": 2,
        "meta_parameters": {"pseudo_family": pseudo_family.label},
    }
    builder = TieredOracleWorkChain.get_builder_from_protocol(
        mace_code, {"foundation": foundation_model}, pw_code, orm.StructureData(ase=atoms[0]), "fast", overrides
    )
    builder.structures = StructureSetData.from_atoms(atoms).store()
    node = submit_and_await(builder, timeout=1200)
    assert node.is_finished_ok, node.exit_message

    routing = node.outputs.routing
    assert routing.base.attributes.get("uncertainty_kind") == "latent"  # one model: its latent distance
    assert routing.base.attributes.get("calibrated") is True
    routes = routing.get_array("route").tolist()
    raw = routing.get_array("raw_uncertainty")
    assert raw[6] == raw.max() and raw[6] > 3 * raw[:6].max()  # the compressed crystal is far from everything
    assert routes[6] != "mace"  # never accepted with the teacher's label
    assert routing.get_array("calibration_row").sum() == 3 and routes.count("dft") + routes.count("dft_failed") <= 4

    # The calibration is a node of the graph, fitted on the DFT rows by a calcfunction, with its figure.
    calibration = node.outputs.calibration
    assert calibration.creator.process_label == "calibrate_teacher"
    assert calibration["uncertainty_kind"] == "latent" and calibration["points"] >= 3
    errors = routing.get_array("teacher_force_error")
    dft_rows = [row for row, route in enumerate(routes) if route == "dft"]
    assert np.isfinite(errors[dft_rows]).all() and sorted(calibration["error"]) == pytest.approx(
        sorted(errors[dft_rows])
    )
    path = tmp_path / "calibration.png"
    calibration_figure(calibration.get_dict()).savefig(path)
    assert path.stat().st_size > 10_000
    dft_runs = [n for n in node.called if n.process_class is PwBaseWorkChain]
    assert len(dft_runs) == routes.count("dft") + routes.count("dft_failed")
