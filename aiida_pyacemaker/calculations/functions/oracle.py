"""Calcfunctions of the ``TieredOracleWorkChain``: chunks for the teacher, the routing decision, the labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

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


@calcfunction
def route_structures(structure_set: StructureSetData, settings: orm.Dict, **mace_results) -> dict[str, Any]:
    """The routing decision, made once: every row's route from the teacher's uncertainty and the thresholds.

    ``mace_results``: ``mace_<chunk>`` results in row order. Outputs: ``routing`` (route, uncertainty, status; the
    counts as an attribute) and one ``StructureData`` per row sent to DFT (``dft_row_<row>``), so that each DFT
    calculation descends from this decision.
    """
    uncertainty, status = teacher_columns(_chunks(mace_results))
    routes = route_with_settings(uncertainty, status, settings.get_dict())
    routing = orm.ArrayData()
    routing.set_array("route", routes.astype(ROUTE_DTYPE))
    routing.set_array("uncertainty", uncertainty)
    routing.set_array("status", status)
    routing.base.attributes.set("counts", route_counts(routes))
    outputs: dict[str, Any] = {"routing": routing}
    dft_rows = np.flatnonzero(routes == "dft")
    if len(dft_rows):
        atoms = structure_set.to_atoms()
        for row in dft_rows:
            outputs[dft_row_label(int(row))] = orm.StructureData(ase=atoms[row])
    return outputs


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
    outcome.set_array("route", routes)
    outcome.set_array("uncertainty", uncertainty)
    outcome.set_array("status", routing.get_array("status"))
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
