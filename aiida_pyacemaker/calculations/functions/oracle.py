"""Calcfunctions of the ``TieredOracleWorkChain``: chunks for the teacher, the routing decision, the labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ...calibration import apply_calibration, calibration_rows, largest_force_error, refit
from ...data.committee_results import MaceResultsData
from ...data.labelled_structures import LabelledStructuresData
from ...data.structure_set import StructureSetData
from ...dft import pw_label_from_outputs
from ...routing import (
    LABELLED_ROUTES,
    ROUTE_DTYPE,
    apply_energy_shift,
    composition,
    energy_reference_content,
    fit_energy_shift,
    route_counts,
    route_with_settings,
)

#: Output label prefix of the structures that the routing sends to DFT (``dft_row_<row>``).
DFT_ROW_PREFIX = "dft_row_"
#: Routes whose structures are kept as sets of their own in the oracle's outputs.
UNLABELLED_OUTPUTS = ("deferred", "rejected", "over_budget")


def dft_row_label(row: int) -> str:
    return f"{DFT_ROW_PREFIX}{row:06d}"


@calcfunction
def split_structure_set(structure_set: StructureSetData, batch_size: orm.Int) -> dict[str, StructureSetData]:
    """Consecutive chunks of at most ``batch_size`` rows, one teacher job each."""
    size, total = batch_size.value, len(structure_set)
    return {
        f"chunk_{start // size:05d}": StructureSetData.gather([(structure_set, range(start, min(start + size, total)))])
        for start in range(0, total, size)
    }


def teacher_columns(results: list[MaceResultsData]) -> tuple[np.ndarray, np.ndarray]:
    """(uncertainty, status) of every row, from the teacher's results of the chunks in row order."""
    uncertainty = np.concatenate([chunk.get_array("uncertainty") for chunk in results])
    status = np.concatenate([chunk.get_array("status") for chunk in results])
    return uncertainty, status


def _chunks(nodes: dict[str, Any]) -> list[MaceResultsData]:
    return [nodes[key] for key in sorted(key for key in nodes if key.startswith("mace_"))]


def teacher_kind(nodes: dict[str, Any]) -> str:
    """The teacher's uncertainty kind (``committee`` or ``latent``), from its results."""
    return _chunks(nodes)[0].uncertainty_kind


def _dft_structures(structure_set: StructureSetData, rows: np.ndarray) -> dict[str, orm.StructureData]:
    """One ``StructureData`` per row sent to DFT, so that each DFT calculation descends from the decision."""
    if len(rows) == 0:
        return {}
    atoms = structure_set.to_atoms()
    return {dft_row_label(int(row)): orm.StructureData(ase=atoms[row]) for row in rows}


@calcfunction
def select_calibration_rows(structure_set: StructureSetData, count: orm.Int, **mace_results) -> dict[str, Any]:
    """The rows DFT labels first, to calibrate the teacher's uncertainty: spread over its range (``calibration``).

    Outputs: ``calibration_rows`` (an ``ArrayData`` with ``rows``) and one ``StructureData`` per row."""
    raw, status = teacher_columns(_chunks(mace_results))
    rows = calibration_rows(raw, status, count.value)
    selection = orm.ArrayData()
    selection.set_array("rows", rows)
    return {"calibration_rows": selection, **_dft_structures(structure_set, rows)}


@calcfunction
def calibrate_teacher(**nodes) -> orm.Dict:
    """The calibration of the teacher's uncertainty, refitted with the rows DFT labelled in this oracle.

    ``nodes``: ``mace_<chunk>`` results in row order, ``dft_trajectory_<row>`` of each DFT row that succeeded,
    optionally ``previous`` (an earlier calibration of the same kind of uncertainty: its points are kept)."""
    chunks = _chunks(nodes)
    raw, _ = teacher_columns(chunks)
    rows = sorted(int(key[len("dft_trajectory_") :]) for key in nodes if key.startswith("dft_trajectory_"))
    records = [row_record(chunks, row) for row in rows]
    errors = [
        largest_force_error(record["forces"], nodes[f"dft_trajectory_{row:06d}"].get_array("forces")[-1])
        for row, record in zip(rows, records, strict=True)
    ]
    previous = nodes["previous"].get_dict() if "previous" in nodes else None
    return orm.Dict(refit(previous, raw[rows], errors, teacher_kind(nodes)))


def row_record(chunks: list[MaceResultsData], row: int) -> dict[str, Any]:
    """The teacher's results of one row of the oracle's structures (chunks in row order)."""
    for chunk in chunks:
        if row < len(chunk):
            return chunk.record(row)
        row -= len(chunk)
    raise IndexError(f"row {row} is past the teacher's results")


@calcfunction
def route_structures(structure_set: StructureSetData, settings: orm.Dict, **nodes) -> dict[str, Any]:
    """The routing decision, made once: every row's route from the teacher's uncertainty and the thresholds.

    ``nodes``: ``mace_<chunk>`` results in row order; optionally ``calibration`` (the thresholds then apply to the
    calibrated uncertainty) and ``calibration_rows`` (rows DFT already labelled to calibrate: they keep the route
    ``dft`` and count against the budget). Outputs: ``routing`` (route, uncertainty (calibrated when a calibration is
    given), raw_uncertainty, status, and ``ace_gamma`` when the structures carry the ACE extrapolation grade of
    exploration: two opinions per structure; the counts as an attribute) and one ``StructureData`` per row newly sent
    to DFT (``dft_row_<row>``), so that each DFT calculation descends from this decision.
    """
    raw, status = teacher_columns(_chunks(nodes))
    calibration = nodes["calibration"].get_dict() if "calibration" in nodes else None
    uncertainty = apply_calibration(calibration, raw)
    config = settings.get_dict()
    fixed = nodes["calibration_rows"].get_array("rows") if "calibration_rows" in nodes else np.array([], dtype=int)
    if "max_dft_calls" in config:
        config["max_dft_calls"] = max(config["max_dft_calls"] - len(fixed), 0)
    free_status = np.array(status, copy=True)
    free_status[fixed] = "calibration"  # routed as flagged (no DFT call from the budget left), then set below
    routes = route_with_settings(uncertainty, free_status, config)
    new_dft = np.flatnonzero(routes == "dft")
    routes[fixed] = "dft"
    routing = orm.ArrayData()
    routing.set_array("route", routes.astype(ROUTE_DTYPE))
    routing.set_array("uncertainty", uncertainty)
    routing.set_array("raw_uncertainty", raw)
    routing.set_array("status", status)
    routing.set_array("calibration_row", np.isin(np.arange(len(routes)), fixed))
    if "gamma" in structure_set.get_arraynames():  # candidates from exploration: the student's opinion beside
        routing.set_array("ace_gamma", structure_set.get_array("gamma"))
    routing.base.attributes.set("counts", route_counts(routes))
    routing.base.attributes.set("calibrated", calibration is not None)
    routing.base.attributes.set("uncertainty_kind", teacher_kind(nodes))
    return {"routing": routing, **_dft_structures(structure_set, new_dft)}


@calcfunction
def assemble_labels(structure_set: StructureSetData, routing: orm.ArrayData, **nodes) -> dict[str, Any]:
    """The labels of both tiers for the rows the routing labelled, on one energy reference.

    ``nodes``: ``mace_<chunk>`` results in row order, ``dft_parameters_<row>`` / ``dft_trajectory_<row>`` of the
    DFT rows that succeeded, optionally ``energy_reference`` (the last known shift, used when no DFT ran). A DFT row
    without results becomes ``dft_failed`` in the output ``routing`` (the decision plus the DFT outcome).
    """
    chunks = _chunks(nodes)
    routes = routing.get_array("route").astype(ROUTE_DTYPE)
    uncertainty = routing.get_array("uncertainty")
    atoms = structure_set.to_atoms()
    mace_rows = [(chunk, row) for chunk in chunks for row in range(len(chunk))]
    teacher_error = np.full(len(routes), np.nan)

    dft_rows = [row for row in range(len(atoms)) if f"dft_parameters_{row:06d}" in nodes]
    for row in np.flatnonzero(routes == "dft"):
        if row not in dft_rows:
            routes[row] = "dft_failed"
    shift: dict[str, float] = {}
    fitted_on = len(dft_rows)
    if dft_rows:
        dft_energies = [float(nodes[f"dft_parameters_{row:06d}"]["energy"]) for row in dft_rows]
        mace_energies = [mace_rows[row][0].record(mace_rows[row][1])["energy"] for row in dft_rows]
        shift = fit_energy_shift([composition(atoms[row]) for row in dft_rows], dft_energies, mace_energies)
    elif "energy_reference" in nodes:  # carried over: it keeps the count of DFT structures that fixed it
        reference = nodes["energy_reference"].get_dict()
        shift = dict(reference.get("shift_per_atom", {}))
        fitted_on = int(reference.get("fitted_on_dft_structures", 0))

    labelled, sources, uncertainties, producers = [], [], [], []
    for row in np.flatnonzero(np.isin(routes, LABELLED_ROUTES)):
        structure = atoms[row].copy()
        if routes[row] == "dft":
            parameters = nodes[f"dft_parameters_{row:06d}"]
            label = pw_label_from_outputs(parameters, nodes[f"dft_trajectory_{row:06d}"])
            producer = parameters.creator.uuid
            chunk, local = mace_rows[row]
            teacher_error[row] = largest_force_error(chunk.record(local)["forces"], label["forces"])
        else:
            chunk, local = mace_rows[row]
            record = chunk.record(local)
            label = {
                "energy": apply_energy_shift(composition(structure), record["energy"], shift),
                "forces": record["forces"],
                "stress": record["stress"],
            }
            producer = chunk.creator.uuid
        structure.info["REF_energy"] = label["energy"]
        structure.arrays["REF_forces"] = label["forces"]
        if "stress" in label and np.isfinite(label["stress"]).all():
            structure.info["REF_stress"] = label["stress"]
        labelled.append(structure)
        sources.append(str(routes[row]))
        uncertainties.append(float(uncertainty[row]))
        producers.append(producer)

    outcome = orm.ArrayData()
    for name in routing.get_arraynames():
        outcome.set_array(name, routing.get_array(name))
    outcome.set_array("route", routes)
    outcome.set_array("teacher_force_error", teacher_error)  # NaN where DFT did not label the row
    for name, value in routing.base.attributes.items():
        if name != "array|" and not name.startswith("array|"):
            outcome.base.attributes.set(name, value)
    outcome.base.attributes.set("counts", route_counts(routes))
    outputs: dict[str, Any] = {
        "routing": outcome,
        "energy_reference": orm.Dict(energy_reference_content(shift, fitted_on)),
    }
    if labelled:
        uuids = [a.info.get("structure_uuid", "") for a in labelled]
        outputs["labelled"] = LabelledStructuresData.from_atoms(
            labelled, source=sources, uncertainty=uncertainties, structure_uuids=uuids, producer_uuids=producers
        )
    for name in UNLABELLED_OUTPUTS:
        rows = np.flatnonzero(routes == name)
        if len(rows):
            outputs[name] = StructureSetData.gather([(structure_set, rows)])
    return outputs
