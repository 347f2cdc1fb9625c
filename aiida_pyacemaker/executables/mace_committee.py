#!/usr/bin/env python
"""Evaluate a committee of MACE models on many structures, batched; standalone (no AiiDA import).

Reads an extended XYZ file, writes ``results.npz`` with, per structure: status, energy (mean over models,
eV), forces (eV/A, concatenated over structures, see ``atom_offsets``), stress (eV/A^3, ASE sign convention,
NaN for non-periodic cells), per-model energies and forces, and the uncertainty:

* ``force_std``: max over atoms of |std over models of the atom's force vector| (eV/A);
* ``energy_std_per_atom``: std over models of the energy / number of atoms (eV/atom);
* ``stress_std``: Frobenius norm of the std over models of the stress tensor (eV/A^3; NaN for a cluster);
* ``mean_force_std``: mean over atoms of the per-atom force std (eV/A);
* ``committee_uncertainty``: the largest of ``force_std``, ``energy_std_per_atom / L`` and
  ``stress_std * volume per atom / L`` (eV/A, ``L = --length-scale``, 5 A, about a cutoff): the force spread alone
  is blind to a symmetric structure (a compressed perfect crystal has zero force on every model), the energy and
  stress are not;
* ``latent_distance`` (with ``--reference``): the largest, over atoms, distance of an atom's invariant MACE node
  features (first model, every interaction layer) to the nearest atom of the same element in the reference
  structures, features standardised by the reference's mean and std (a std of at least 0.1 x the features' RMS),
  divided by sqrt(number of features). It
  needs one model only: the uncertainty of a single foundation model;
* ``uncertainty``: the routing value: ``committee_uncertainty`` or ``latent_distance`` (``--uncertainty``;
  ``auto`` takes the committee with two or more models, else the latent distance).

Std is the population std (ddof=0). An uncertainty that cannot be computed (one model without a reference) is NaN,
never zero.
A structure that cannot be trusted gets a status other than ``ok`` and uncertainty = inf; the rest of the
batch is unaffected. Statuses: ok, empty, nonfinite, unknown_element, degenerate_cell (a periodic cell with a
near-zero height or volume, or so many periodic images within the cutoff that a neighbour search could not end),
too_close, isolated_atom, timeout (the structure's screening ran past ``--screen-timeout`` seconds: it runs in a
forked worker that is killed, so no row can stall the batch), screening_failed (the worker died on it).

Fatal problems write ``error.json`` ({"error": kind, "message": ...}) and exit non-zero:
exit 3 ``model_unreadable``, exit 4 ``input_unreadable``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

EXIT_MODEL_UNREADABLE = 3
EXIT_INPUT_UNREADABLE = 4
STATUS_WIDTH = 16
#: A periodic direction thinner than this (A) is degenerate.
MIN_CELL_HEIGHT = 0.1
#: More candidate pairs than this (atoms x periodic images within the cutoff) is an absurd cell.
MAX_PAIR_CANDIDATES = 5.0e7


def fail(kind: str, message: str, code: int) -> None:
    """Write ``error.json`` and exit with ``code``."""
    with open("error.json", "w") as handle:
        json.dump({"error": kind, "message": message}, handle)
    print(f"{kind}: {message}", file=sys.stderr)
    sys.exit(code)


def load_models(paths: list[str], device: str, dtype: str) -> list[Any]:
    import torch

    models = []
    for path in paths:
        try:
            model = torch.load(path, map_location=device, weights_only=False)
            model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
            _ = model.r_max, model.atomic_numbers
        except Exception as exception:
            fail("model_unreadable", f"{path}: {type(exception).__name__}: {exception}", EXIT_MODEL_UNREADABLE)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        models.append(model)
    return models


def neighbours(atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """(first atom index, distance) of every pair closer than ``cutoff``: matscipy's C code, else ASE's."""
    try:
        from matscipy.neighbours import neighbour_list

        return neighbour_list("id", atoms, cutoff)
    except Exception:  # matscipy missing, or a cell it refuses (e.g. no cell for a cluster)
        from ase.neighborlist import neighbor_list

        return neighbor_list("id", atoms, cutoff)


def degenerate_cell(atoms, cutoff: float) -> bool:
    """A periodic cell that no neighbour search should see: a direction thinner than ``MIN_CELL_HEIGHT``, or
    more candidate pairs within ``cutoff`` than ``MAX_PAIR_CANDIDATES`` (e.g. one lattice vector of 1e-6 A)."""
    periodic = np.flatnonzero(atoms.pbc)
    if len(periodic) == 0:
        return False
    cell = atoms.cell.array
    images = 1.0
    for axis in periodic:
        others = [cell[i] for i in range(3) if i != axis]
        normal = np.cross(*others)
        area = float(np.linalg.norm(normal))
        if area < 1e-12:
            return True
        height = abs(float(np.dot(cell[axis], normal))) / area
        if height < MIN_CELL_HEIGHT:
            return True
        images *= 2 * np.ceil(cutoff / height) + 1
    return bool(len(atoms) * images > MAX_PAIR_CANDIDATES)


def structure_status(atoms, known_numbers: set[int], min_distance: float, isolation_distance: float) -> str:
    """Why a structure cannot be evaluated, or ``ok``. Cheap checks first; the neighbour search last."""
    if len(atoms) == 0:
        return "empty"
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        return "nonfinite"
    if not set(atoms.numbers.tolist()) <= known_numbers:
        return "unknown_element"
    cutoff = max(min_distance, isolation_distance, 1e-3)
    if degenerate_cell(atoms, cutoff):
        return "degenerate_cell"
    first, distances = neighbours(atoms, cutoff)
    if len(distances) and distances.min() < min_distance:
        return "too_close"
    within = first[distances < isolation_distance]
    if (np.bincount(within, minlength=len(atoms)) == 0).any():
        return "isolated_atom"
    return "ok"


def _screen_worker(connection, structures: list, start: int, *settings: Any) -> None:
    for index in range(start, len(structures)):
        connection.send((index, structure_status(structures[index], *settings)))
    connection.close()


def screen(structures: list, known: set[int], min_distance: float, isolation: float, timeout: float) -> list[str]:
    """``structure_status`` of every structure in a forked worker; a structure that takes longer than ``timeout``
    seconds gets ``timeout``, the worker is killed and a new one goes on with the next structure."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    statuses = ["timeout"] * len(structures)
    start = 0
    while start < len(structures):
        receiver, sender = context.Pipe(duplex=False)
        worker = context.Process(
            target=_screen_worker, args=(sender, structures, start, known, min_distance, isolation), daemon=True
        )
        worker.start()
        sender.close()
        index = start
        while index < len(structures):
            if not receiver.poll(timeout):
                print(f"structure {index}: screening took over {timeout} s: status timeout", file=sys.stderr)
                worker.kill()
                index += 1  # this structure keeps ``timeout``
                break
            try:
                done, status = receiver.recv()
            except EOFError:  # the worker died on this structure (e.g. killed for memory)
                statuses[index] = "screening_failed"
                index += 1
                break
            statuses[done] = status
            index = done + 1
        worker.join()
        receiver.close()
        start = index
    return statuses


def make_batches(sizes: np.ndarray, batch_size: int, max_batch_atoms: int) -> list[list[int]]:
    """Group structure indices of similar size: at most ``batch_size`` structures and about ``max_batch_atoms``."""
    batches: list[list[int]] = []
    current: list[int] = []
    atoms_in_batch = 0
    for index in np.argsort(sizes, kind="stable"):
        if current and (len(current) >= batch_size or atoms_in_batch + sizes[index] > max_batch_atoms):
            batches.append(current)
            current, atoms_in_batch = [], 0
        current.append(int(index))
        atoms_in_batch += int(sizes[index])
    if current:
        batches.append(current)
    return batches


def graph_key(model) -> tuple:
    """Models with the same key read the same graphs: same cutoff, z-table and heads."""
    heads = tuple(getattr(model, "heads", None) or ["Default"])
    return float(model.r_max), tuple(int(z) for z in model.atomic_numbers), heads


def build_batches(model, structures: list, batches: list[list[int]], device: str, dtype: str) -> list:
    """The MACE graph batches of ``structures`` for ``model``'s cutoff and z-table."""
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools
    from mace.tools.utils import AtomicNumberTable

    r_max, numbers, heads = graph_key(model)
    z_table = AtomicNumberTable(list(numbers))
    keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={})
    graph_batches = []
    with torch_tools.default_dtype(getattr(torch, dtype)):
        for batch_indices in batches:
            graphs = [
                mace_data.AtomicData.from_config(
                    mace_data.config_from_atoms(structures[i], key_specification=keyspec, head_name=heads[-1]),
                    z_table=z_table,
                    cutoff=r_max,
                    heads=list(heads),
                )
                for i in batch_indices
            ]
            graph_batches.append(torch_geometric.Batch.from_data_list(graphs).to(device))
    return graph_batches


def evaluate_model(model, graph_batches: list, batches: list[list[int]], features: bool = False) -> dict[int, tuple]:
    """Energy, forces, stress (and with ``features`` the invariant node features) of one model per structure."""
    results: dict[int, tuple] = {}
    for batch_indices, batch in zip(batches, graph_batches, strict=True):
        # A fresh copy per model: the forward pass attaches gradients to positions and cell.
        data = {key: value.clone() if hasattr(value, "clone") else value for key, value in batch.to_dict().items()}
        output = model(data, compute_stress=True, training=False)
        energies = output["energy"].detach().cpu().numpy()
        forces = output["forces"].detach().cpu().numpy()
        stresses = output["stress"].detach().cpu().numpy() if output.get("stress") is not None else None
        node_features = invariant_features(model, output["node_feats"]).detach().cpu().numpy() if features else None
        pointer = batch["ptr"].cpu().numpy()
        for position, index in enumerate(batch_indices):
            stress = stresses[position] if stresses is not None else np.full((3, 3), np.nan)
            atoms = slice(pointer[position], pointer[position + 1])
            latent = node_features[atoms] if node_features is not None else None
            results[index] = (energies[position], forces[atoms], stress, latent)
    return results


COMMITTEE_COLUMNS = ("force_std", "energy_std_per_atom", "stress_std", "mean_force_std", "committee_uncertainty")


def committee_statistics(
    forces_per_model: np.ndarray, energies: np.ndarray, stresses: np.ndarray, volume: float, length_scale: float
) -> dict[str, float]:
    """The spreads of one structure over the models (``COMMITTEE_COLUMNS``); NaN for a single model.

    ``stresses``: (models, 3, 3) in eV/A^3, NaN for a cluster; ``volume`` in A^3 (NaN for a cluster)."""
    if forces_per_model.shape[0] < 2:
        return dict.fromkeys(COMMITTEE_COLUMNS, np.nan)
    n_atoms = forces_per_model.shape[1]
    per_atom = np.linalg.norm(forces_per_model.std(axis=0), axis=1)
    stress_std = float(np.linalg.norm(stresses.std(axis=0)))
    energy_term = float(energies.std() / n_atoms) / length_scale
    stress_term = stress_std * volume / n_atoms / length_scale if np.isfinite(stress_std * volume) else 0.0
    return {
        "force_std": float(per_atom.max()),
        "energy_std_per_atom": float(energies.std() / n_atoms),
        "stress_std": stress_std,
        "mean_force_std": float(per_atom.mean()),
        "committee_uncertainty": max(float(per_atom.max()), energy_term, stress_term),
    }


def invariant_features(model, node_feats):
    """The invariant part of MACE's ``node_feats`` (every interaction layer), as mace's ``get_descriptors`` takes it."""
    from e3nn import o3
    from mace.modules.utils import extract_invariant

    irreps = o3.Irreps(str(model.products[0].linear.irreps_out))
    l_max = irreps.lmax
    features = irreps.dim // (l_max + 1) ** 2
    return extract_invariant(node_feats, num_layers=int(model.num_interactions), num_features=features, l_max=l_max)


class LatentReference:
    """The reference atoms' invariant features per element, standardised; nearest-neighbour distances to them."""

    #: A feature's scale is at least this share of the features' overall RMS: a reference of one perfect crystal
    #: has no spread at all, and a feature that barely varies must not turn noise into distance.
    SCALE_FLOOR = 0.1

    def __init__(self, features: np.ndarray, numbers: np.ndarray) -> None:
        self.mean = features.mean(axis=0)
        overall = float(np.sqrt(np.mean(features**2))) or 1.0
        self.scale = np.maximum(features.std(axis=0), self.SCALE_FLOOR * overall)
        self.by_element = {int(z): self.standardise(features[numbers == z]) for z in np.unique(numbers)}

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale / np.sqrt(features.shape[1])

    def distances(self, features: np.ndarray, numbers: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Per atom: distance to the nearest reference atom of the same element (inf for an element without any)."""
        query = self.standardise(features)
        result = np.full(len(query), np.inf)
        for z, reference in self.by_element.items():
            rows = np.flatnonzero(numbers == z)
            reference_norms = (reference**2).sum(axis=1)
            for start in range(0, len(rows), chunk):
                block = query[rows[start : start + chunk]]
                squared = (block**2).sum(axis=1)[:, None] + reference_norms[None, :] - 2.0 * block @ reference.T
                result[rows[start : start + chunk]] = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
        return result


def read_structures(path: str) -> list:
    from ase.io import read

    try:
        return list(read(path, index=":", format="extxyz"))
    except Exception as exception:
        fail("input_unreadable", f"{path}: {type(exception).__name__}: {exception}", EXIT_INPUT_UNREADABLE)
        raise  # unreachable: fail exits


def reference_latent(model, path: str, args: argparse.Namespace, known: set[int]) -> LatentReference:
    """The invariant features of every atom of the reference structures (rows of unknown elements are skipped)."""
    structures = [atoms for atoms in read_structures(path) if len(atoms) and set(atoms.numbers.tolist()) <= known]
    if not structures:
        fail("input_unreadable", f"{path}: no reference structure with elements the model knows", EXIT_INPUT_UNREADABLE)
    sizes = np.array([len(atoms) for atoms in structures], dtype=int)
    batches = make_batches(sizes, args.batch_size, args.max_batch_atoms)
    evaluated = evaluate_model(model, build_batches(model, structures, batches, args.device, args.dtype), batches, True)
    features = np.concatenate([evaluated[index][3] for index in range(len(structures))])
    numbers = np.concatenate([atoms.numbers for atoms in structures])
    return LatentReference(features, numbers)


def run(args: argparse.Namespace) -> dict[str, np.ndarray]:
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    structures = read_structures(args.structures)
    models = load_models(args.models, args.device, args.dtype)
    known = set.intersection(*(set(int(z) for z in model.atomic_numbers) for model in models))
    isolation = args.isolation_distance or min(float(model.r_max) for model in models)
    kind = args.uncertainty if args.uncertainty != "auto" else ("committee" if len(models) > 1 else "latent")
    if kind == "latent" and not args.reference:
        fail("input_unreadable", "the latent-distance uncertainty needs --reference structures", EXIT_INPUT_UNREADABLE)
    reference = reference_latent(models[0], args.reference, args, known) if args.reference else None

    n_structures, n_models = len(structures), len(models)
    sizes = np.array([len(atoms) for atoms in structures], dtype=int)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    status = np.array(
        screen(structures, known, args.min_distance, isolation, args.screen_timeout), dtype=f"<U{STATUS_WIDTH}"
    )
    ok = np.flatnonzero(status == "ok")
    batches = make_batches(sizes[ok], args.batch_size, args.max_batch_atoms)
    batches = [[int(ok[i]) for i in batch] for batch in batches]

    energy_per_model = np.full((n_models, n_structures), np.nan)
    forces_per_model = np.full((n_models, offsets[-1], 3), np.nan)
    stress_per_model = np.full((n_models, n_structures, 3, 3), np.nan)
    latent_distance = np.full(n_structures, np.inf)
    graph_cache: dict[tuple, list] = {}
    for m, model in enumerate(models):
        key = graph_key(model)
        if key not in graph_cache:
            graph_cache[key] = build_batches(model, structures, batches, args.device, args.dtype)
        evaluated = evaluate_model(model, graph_cache[key], batches, features=m == 0 and reference is not None)
        for index, (energy, forces, stress, features) in evaluated.items():
            energy_per_model[m, index] = energy
            forces_per_model[m, offsets[index] : offsets[index + 1]] = forces
            stress_per_model[m, index] = stress
            if features is not None and reference is not None:
                latent_distance[index] = float(reference.distances(features, structures[index].numbers).max())
    for index, atoms in enumerate(structures):
        if not all(atoms.pbc):
            stress_per_model[:, index] = np.nan

    columns = {name: np.full(n_structures, np.inf) for name in COMMITTEE_COLUMNS}
    for index in ok:
        atom_slice = slice(offsets[index], offsets[index + 1])
        if not (np.isfinite(energy_per_model[:, index]).all() and np.isfinite(forces_per_model[:, atom_slice]).all()):
            status[index] = "nonfinite"
            latent_distance[index] = np.inf
            continue
        volume = structures[index].get_volume() if all(structures[index].pbc) else np.nan
        statistics = committee_statistics(
            forces_per_model[:, atom_slice],
            energy_per_model[:, index],
            stress_per_model[:, index],
            volume,
            args.length_scale,
        )
        for name, value in statistics.items():
            columns[name][index] = value
    if reference is None:
        latent_distance[status == "ok"] = np.nan
    uncertainty = columns["committee_uncertainty"] if kind == "committee" else latent_distance
    return {
        "status": status,
        "n_atoms": sizes,
        "atom_offsets": offsets,
        "energy": energy_per_model.mean(axis=0),
        "forces": forces_per_model.mean(axis=0),
        "stress": stress_per_model.mean(axis=0),
        "energy_per_model": energy_per_model,
        "forces_per_model": forces_per_model,
        "uncertainty": uncertainty.copy(),
        "uncertainty_kind": np.array(kind),
        "latent_distance": latent_distance,
        **columns,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MACE committee evaluation with uncertainty.")
    parser.add_argument("--structures", required=True, help="extended XYZ file")
    parser.add_argument("--models", nargs="+", required=True, help="MACE model files (one or more)")
    parser.add_argument("--output", default="results.npz")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batch-atoms", type=int, default=512)
    parser.add_argument("--min-distance", type=float, default=0.5, help="closer atoms: status too_close (A)")
    parser.add_argument("--isolation-distance", type=float, default=0.0, help="0: the models' r_max (A)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument(
        "--screen-timeout", type=float, default=60.0, help="seconds of screening per structure before status timeout"
    )
    parser.add_argument("--reference", default=None, help="extended XYZ of reference structures (latent distance)")
    parser.add_argument(
        "--uncertainty", default="auto", choices=["auto", "committee", "latent"], help="the routing uncertainty"
    )
    parser.add_argument(
        "--length-scale", type=float, default=5.0, help="A: turns energy/atom and stress spreads into eV/A"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    np.savez(args.output, **results)  # type: ignore[arg-type]
    counts = {name: int((results["status"] == name).sum()) for name in np.unique(results["status"])}
    print(json.dumps({"structures": len(results["status"]), "status_counts": counts}))


if __name__ == "__main__":
    main()
