"""``TieredOracleWorkChain``: label structures with MACE first, and with DFT only where the committee is unsure."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, while_
from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

from ..calculations.mace import MaceCalculation
from ..data.labelled_structures import LabelledStructuresData
from ..data.structure_set import StructureSetData
from .dft import pw_label_from_outputs
from .routing import (
    MIDDLE_BAND_POLICIES,
    apply_energy_shift,
    energy_reference_content,
    fit_energy_shift,
    route,
    validate_thresholds,
)


def composition(atoms) -> dict[str, int]:
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    return {str(symbol): int(count) for symbol, count in zip(symbols, counts, strict=True)}


@calcfunction
def split_structure_set(structure_set: StructureSetData, batch_size: orm.Int) -> dict[str, StructureSetData]:
    """Consecutive chunks of at most ``batch_size`` rows, one MACE job each."""
    size, total = batch_size.value, len(structure_set)
    return {
        f"chunk_{start // size:05d}": StructureSetData.gather([(structure_set, range(start, min(start + size, total)))])
        for start in range(0, total, size)
    }


@calcfunction
def select_structures(structure_set: StructureSetData, rows: orm.List) -> dict[str, orm.StructureData]:
    """``StructureData`` of the given rows, for the DFT tier."""
    atoms = structure_set.to_atoms()
    return {f"row_{row:06d}": orm.StructureData(ase=atoms[row]) for row in rows.get_list()}


def committee_columns(results: list) -> tuple[np.ndarray, np.ndarray]:
    """(uncertainty, status) of every row, from the MaceResultsData of the chunks in row order."""
    uncertainty = np.concatenate([chunk.get_array("uncertainty") for chunk in results])
    status = np.concatenate([chunk.get_array("status") for chunk in results])
    return uncertainty, status


def route_rows(uncertainty: np.ndarray, status: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """``route`` with the work chain's routing settings (see ``TieredOracleWorkChain.routing_settings``)."""
    return route(
        uncertainty, status, settings["accept"], settings["call_dft"], settings["policy"], settings.get("max_dft_calls")
    )


@calcfunction
def assemble_labels(structure_set: StructureSetData, settings: orm.Dict, **nodes) -> dict[str, Any]:
    """Route every row from the MACE results and the thresholds, and gather the labels of both tiers.

    ``nodes``: ``mace_<chunk>`` MaceResultsData in row order, ``dft_parameters_<row>`` / ``dft_trajectory_<row>``
    of the DFT-labelled rows, optionally ``energy_reference`` (the last known shift, used when no DFT ran).
    """
    config = settings.get_dict()
    chunks = [nodes[key] for key in sorted(key for key in nodes if key.startswith("mace_"))]
    uncertainty, status = committee_columns(chunks)
    routes = route_rows(uncertainty, status, config)
    atoms = structure_set.to_atoms()
    mace_rows = [(chunk, row) for chunk in chunks for row in range(len(chunk))]

    dft_rows = [row for row in range(len(atoms)) if f"dft_parameters_{row:06d}" in nodes]
    for row in np.flatnonzero(routes == "dft"):
        if row not in dft_rows:
            routes[row] = "dft_failed"
    shift: dict[str, float] = {}
    fitted = False
    if dft_rows:
        dft_energies = [float(nodes[f"dft_parameters_{row:06d}"]["energy"]) for row in dft_rows]
        mace_energies = [mace_rows[row][0].record(mace_rows[row][1])["energy"] for row in dft_rows]
        shift = fit_energy_shift([composition(atoms[row]) for row in dft_rows], dft_energies, mace_energies)
        fitted = True
    elif "energy_reference" in nodes:
        shift = dict(nodes["energy_reference"].get_dict().get("shift_per_atom", {}))

    labelled, sources, uncertainties, producers = [], [], [], []
    for row in np.flatnonzero((routes == "mace") | (routes == "dft")):
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

    routing = orm.ArrayData()
    routing.set_array("route", routes.astype("<U11"))
    routing.set_array("uncertainty", uncertainty)
    routing.set_array("status", status)
    routing.base.attributes.set("counts", {str(r): int((routes == r).sum()) for r in np.unique(routes)})
    outputs: dict[str, Any] = {
        "routing": routing,
        "energy_reference": orm.Dict(energy_reference_content(shift, len(dft_rows) if fitted else 0)),
    }
    if labelled:
        uuids = [a.info["structure_uuid"] for a in labelled]
        outputs["labelled"] = LabelledStructuresData.from_atoms(
            labelled, source=sources, uncertainty=uncertainties, structure_uuids=uuids, producer_uuids=producers
        )
    for name in ("deferred", "rejected", "over_budget"):
        rows = np.flatnonzero(routes == name)
        if len(rows):
            outputs[name] = StructureSetData.gather([(structure_set, rows)])
    return outputs


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    budget = inputs["max_dft_calls"].value if "max_dft_calls" in inputs else None
    message = validate_thresholds(
        inputs["uncertainty_threshold"].value,
        inputs["threshold_call_dft"].value,
        inputs["middle_band_policy"].value,
        budget,
    )
    if message:
        return message
    if len(inputs["mace"]["models"]) < 2:
        return "mace.models: routing needs a committee of two or more models (one model has no uncertainty)"
    if "dft" not in inputs and budget != 0:
        return "give the DFT tier inputs (`dft` namespace), or set max_dft_calls=0 to label with MACE only"
    return None


class TieredOracleWorkChain(WorkChain):
    """MACE committee first; DFT (PwBaseWorkChain) only above the uncertainty threshold. Every decision is kept."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structures", valid_type=StructureSetData, help="The candidates, any number.")
        spec.expose_inputs(MaceCalculation, namespace="mace", exclude=("structures", "structure_set"))
        spec.input("mace_batch_size", valid_type=orm.Int, default=lambda: orm.Int(2000), help="Structures per job.")
        spec.expose_inputs(
            PwBaseWorkChain,
            namespace="dft",
            exclude=("pw.structure",),
            namespace_options={"required": False, "populate_defaults": False},
        )
        spec.input("uncertainty_threshold", valid_type=orm.Float, help="Accept the MACE label when u <= this (eV/A).")
        spec.input("threshold_call_dft", valid_type=orm.Float, help="Send to DFT when u > this (eV/A).")
        spec.input(
            "middle_band_policy",
            valid_type=orm.Str,
            default=lambda: orm.Str("discard"),
            help=f"For accept < u <= dft: one of {MIDDLE_BAND_POLICIES}.",
        )
        spec.input("max_dft_calls", valid_type=orm.Int, required=False, help="DFT budget; most uncertain first.")
        spec.input("max_concurrent_dft", valid_type=orm.Int, default=lambda: orm.Int(4))
        spec.input("energy_reference", valid_type=orm.Dict, required=False, help="Last known shift, if no DFT runs.")
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.run_mace,
            cls.inspect_mace,
            while_(cls.dft_pending)(cls.run_dft_batch, cls.inspect_dft_batch),  # type: ignore[arg-type]
            cls.assemble,
        )
        spec.output("labelled", valid_type=LabelledStructuresData, required=False)
        spec.output("routing", valid_type=orm.ArrayData, help="route, uncertainty and status of every input row")
        spec.output("energy_reference", valid_type=orm.Dict)
        for name in ("deferred", "rejected", "over_budget"):
            spec.output(name, valid_type=StructureSetData, required=False)
        spec.exit_code(401, "ERROR_MACE_FAILED", message="A MaceCalculation failed: {message}")

    def run_mace(self):
        """One MaceCalculation per chunk of ``mace_batch_size`` structures."""
        structures = self.inputs.structures
        if len(structures) <= self.inputs.mace_batch_size.value:
            chunks = {"chunk_00000": structures}
        else:
            chunks = split_structure_set(structures, self.inputs.mace_batch_size)
        inputs = self.exposed_inputs(MaceCalculation, namespace="mace")
        for key, chunk in sorted(chunks.items()):
            future = self.submit(MaceCalculation, **inputs, structure_set=chunk)
            self.to_context(**{f"mace_{key}": future})

    def inspect_mace(self):
        """Route every structure; queue the DFT rows."""
        for key in self.mace_keys():
            node = self.ctx[key]
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_MACE_FAILED.format(message=f"{node.process_label}<{node.pk}>")
        uncertainty, status = committee_columns([self.ctx[key].outputs.results for key in self.mace_keys()])
        routes = route_rows(uncertainty, status, self.routing_settings())
        counts = {str(name): int((routes == name).sum()) for name in np.unique(routes)}
        self.report(f"routes after the MACE tier: {counts}")
        self.ctx.dft_queue = [int(row) for row in np.flatnonzero(routes == "dft")]
        self.ctx.dft_structures = {}
        if self.ctx.dft_queue:
            self.ctx.dft_structures = select_structures(self.inputs.structures, orm.List(self.ctx.dft_queue))
            for row in self.ctx.dft_queue:  # queryable: "structures sent to DFT with u > x"
                self.ctx.dft_structures[f"row_{row:06d}"].base.extras.set_many(
                    {"pyacemaker_uncertainty": float(uncertainty[row]), "pyacemaker_row": row}
                )
        self.ctx.dft_done = []
        return None

    def dft_pending(self) -> bool:
        return bool(self.ctx.dft_queue)

    def run_dft_batch(self):
        """Submit up to ``max_concurrent_dft`` PwBaseWorkChains."""
        batch = self.ctx.dft_queue[: self.inputs.max_concurrent_dft.value]
        self.ctx.dft_queue = self.ctx.dft_queue[len(batch) :]
        inputs = self.exposed_inputs(PwBaseWorkChain, namespace="dft")
        futures = {}
        for row in batch:
            builder_inputs = {**inputs, "pw": {**inputs["pw"], "structure": self.ctx.dft_structures[f"row_{row:06d}"]}}
            futures[f"dft_{row:06d}"] = self.submit(PwBaseWorkChain, **builder_inputs)
        self.ctx.dft_batch = batch
        return ToContext(**futures)

    def inspect_dft_batch(self):
        for row in self.ctx.dft_batch:
            node = self.ctx[f"dft_{row:06d}"]
            if node.is_finished_ok:
                self.ctx.dft_done.append(row)
            else:
                self.report(f"DFT of row {row} failed ({node.process_label}<{node.pk}>): recorded as dft_failed")

    def assemble(self):
        nodes: dict[str, Any] = {key: self.ctx[key].outputs.results for key in self.mace_keys()}
        for row in self.ctx.dft_done:
            node = self.ctx[f"dft_{row:06d}"]
            nodes[f"dft_parameters_{row:06d}"] = node.outputs.output_parameters
            nodes[f"dft_trajectory_{row:06d}"] = node.outputs.output_trajectory
        if "energy_reference" in self.inputs:
            nodes["energy_reference"] = self.inputs.energy_reference
        outputs = assemble_labels(self.inputs.structures, orm.Dict(self.routing_settings()), **nodes)
        for name, node in outputs.items():
            self.out(name, node)
        self.report(
            f"routes: {outputs['routing'].base.attributes.get('counts')}; "
            f"energy shift: {outputs['energy_reference']['shift_per_atom']}"
        )

    def routing_settings(self) -> dict[str, Any]:
        """The thresholds, policy and budget, as ``route_rows`` and ``assemble_labels`` read them."""
        settings = {
            "accept": self.inputs.uncertainty_threshold.value,
            "call_dft": self.inputs.threshold_call_dft.value,
            "policy": self.inputs.middle_band_policy.value,
        }
        if "max_dft_calls" in self.inputs:
            settings["max_dft_calls"] = self.inputs.max_dft_calls.value
        return settings

    def mace_keys(self) -> list[str]:
        return sorted(key for key in self.ctx if key.startswith("mace_chunk_"))
