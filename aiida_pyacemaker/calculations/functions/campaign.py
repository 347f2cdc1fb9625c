"""Calcfunctions of the ``DistillationWorkChain``: candidates, rows by source, teacher reference, the summary."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ...candidates import make_candidates
from ...data.labelled_structures import LabelledStructuresData
from ...data.structure_set import StructureSetData
from ...routing import apply_energy_shift, composition, dft_calls, energy_reference_content, fit_energy_shift


@calcfunction
def generate_candidates(prototypes: StructureSetData, policies: orm.Dict, seed: orm.Int) -> StructureSetData:
    """The candidate pool made from ``prototypes`` (see ``aiida_pyacemaker.candidates``); seeded."""
    return StructureSetData.from_atoms(make_candidates(prototypes.to_atoms(), policies.get_dict(), seed.value))


@calcfunction
def select_source(source: orm.Str, **sets: LabelledStructuresData) -> dict[str, LabelledStructuresData]:
    """The rows of ``sets`` (in key order) labelled by ``source``; nothing when there is none."""
    parts = [(sets[key], np.flatnonzero(sets[key].get_array("source") == source.value)) for key in sorted(sets)]
    if not any(len(rows) for _, rows in parts):
        return {}
    return {"selected": LabelledStructuresData.gather(parts)}


@calcfunction
def fit_reference(dft_set: LabelledStructuresData, mace_results: orm.ArrayData) -> orm.Dict:
    """The per-element shift that puts this teacher's energies on the DFT reference, from the DFT rows."""
    compositions = [composition(atoms) for atoms in dft_set.to_atoms()]
    mace_energies = mace_results.get_array("energy")
    shift = fit_energy_shift(compositions, dft_set.get_array("energy").tolist(), mace_energies.tolist())
    return orm.Dict(energy_reference_content(shift, len(dft_set)))


@calcfunction
def summarise_campaign(settings: orm.Dict, **nodes) -> orm.Dict:
    """One record per iteration from the graph: routes, DFT calls, test RMSE and forgetting (``<kind>_<k>`` nodes)."""
    iterations = []
    total_calls = 0
    for index in range(settings["iterations"]):
        counts = nodes[f"routing_{index:03d}"].base.attributes.get("counts")
        total_calls += dft_calls(counts)
        record: dict[str, Any] = {"iteration": index, "routes": counts, "dft_calls_total": total_calls}
        if f"fit_metrics_{index:03d}" in nodes:
            record["train_force_rmse_mev_per_a"] = nodes[f"fit_metrics_{index:03d}"].get("train_rmse_f_mev_per_a")
        if f"forgetting_{index:03d}" in nodes:
            forgetting = nodes[f"forgetting_{index:03d}"]
            record["test_force_rmse_mev_per_a"] = forgetting["overall"]["rmse_f_mev_per_a"]
            overall = forgetting["overall"]
            record["test_energy_rmse_mev_per_atom"] = overall["rmse_e_mev_per_atom"]
            if "worst_structure" in overall:
                record["test_median_structure_force_rmse_mev_per_a"] = overall["median_structure_f_mev_per_a"]
                record["test_worst_structure_force_rmse_mev_per_a"] = overall["worst_structure_f_mev_per_a"]
                record["test_worst_structure"] = overall["worst_structure"]
            if "max_gamma" in overall:  # the potential's extrapolation grade on the test set
                record["test_max_gamma"] = overall["max_gamma"]
                record["test_extrapolating_structures"] = overall["extrapolating_structures"]
            record["forgetting"] = forgetting.get("force_rmse_ratio", {})
        if f"exploration_{index:03d}" in nodes:  # Phase 3: where the candidates of this iteration came from
            exploration = nodes[f"exploration_{index:03d}"]
            trajectories = exploration["trajectories"]
            record["exploration"] = {
                "frames_collected": exploration["frames_collected"],
                "frames_selected": exploration["frames_selected"],
                "max_gamma": max(item["max_gamma"] for item in trajectories),
                "stop_reasons": sorted({item["stop_reason"] for item in trajectories}),
                "md_ps": sum(item["time_ps"] for item in trajectories),
            }
        iterations.append(record)
    return orm.Dict({**settings.get_dict(), "dft_calls": total_calls, "per_iteration": iterations})


@calcfunction
def teacher_reference(prototypes: StructureSetData, **dft_sets: LabelledStructuresData) -> StructureSetData:
    """The structures a single teacher's latent distance is measured to: the prototypes and every DFT structure of
    the campaign so far (``dft_sets``, in key order); it grows as DFT rows arrive."""
    atoms = prototypes.to_atoms()
    for key in sorted(dft_sets):
        atoms.extend(dft_sets[key].to_atoms())
    for frame in atoms:
        frame.calc = None
    return StructureSetData.from_atoms(atoms)


@calcfunction
def relabel(labelled: LabelledStructuresData, mace_results: orm.ArrayData, energy_reference: orm.Dict):
    """``labelled``'s rows with the (fine-tuned) teacher's labels: energy on the DFT reference, forces, stress.

    Phase 4: the rows the old teacher labelled are relabelled by the fine-tuned one before the delta update, where
    the new label is within reach of the old one: the largest atomic force change may not exceed the old label's
    calibrated uncertainty (its expected largest force error, ``labelled``'s ``uncertainty``). A larger change is not
    a correction the DFT rows can justify but drift of a model fine-tuned on a few structures: that row keeps its
    label. The counts are the output's ``relabelling`` attribute."""
    shift = energy_reference.get_dict().get("shift_per_atom", {})
    structures = labelled.to_atoms()
    offsets = mace_results.get_array("atom_offsets")
    energies, forces, stresses = (mace_results.get_array(name) for name in ("energy", "forces", "stress"))
    status = mace_results.get_array("status")
    bound = labelled.get_array("uncertainty")
    frames, rows, drifted = [], [], 0
    for row, frame in enumerate(structures):
        if status[row] != "ok":
            continue
        new_forces = forces[offsets[row] : offsets[row + 1]]
        if not np.linalg.norm(new_forces - frame.get_forces(), axis=1).max() <= bound[row]:
            drifted += 1
            continue
        frame.calc = None
        frame.info["REF_energy"] = apply_energy_shift(composition(frame), float(energies[row]), shift)
        frame.arrays["REF_forces"] = new_forces
        if np.isfinite(stresses[row]).all():
            frame.info["REF_stress"] = stresses[row]
        frames.append(frame)
        rows.append(row)
    if not frames:
        return {}
    producer = mace_results.creator.uuid if mace_results.creator else ""
    relabelled = LabelledStructuresData.from_atoms(
        frames,
        source="mace",
        uncertainty=bound[rows].tolist(),
        structure_uuids=[str(uuid) for uuid in labelled.get_array("structure_uuids")[rows]],
        producer_uuids=[producer] * len(frames),
    )
    relabelled.base.attributes.set("relabelling", {"relabelled": len(rows), "kept_old_label": drifted})
    return {"relabelled": relabelled}


@calcfunction
def merge_labelled(**sets: LabelledStructuresData) -> LabelledStructuresData:
    """The rows of ``sets`` in key order, as one set."""
    return LabelledStructuresData.gather([(sets[key], np.arange(len(sets[key]))) for key in sorted(sets)])
