"""Build a tiny MACE committee (tests, examples) for any element or set of elements, reproducibly.

1. Candidate cells around one or more prototypes (rattled, strained, one vacancy in six), seeded.
2. Labelled by real pw.x through the plugin: PwBaseWorkChain with the `pw@localhost` code and the
   `pyacemaker/debian-qe/PBE` family that `aiida-pyacemaker setup` installs, with the settings of the distillation
   loop's DFT tier in its `fast` protocol (protocols/tiered_oracle.yaml: cutoff stringency `low`, k-point spacing
   0.45 1/A; aiida-quantumespresso's `fast` protocol: cold smearing 0.0275 Ry), so that the teacher's data and the
   loop's DFT labels share physics. Bands come from the valence electrons of the family (aiida_pyacemaker.dft).
3. Three MACE models (protocol `fast` of protocols/mace_train/base.yaml: 16 channels, max_L 0, r_max 4.5), one
   MaceTrainCalculation with seeds 0, 1, 2 (mace_run_train through the plugin).
4. `testset`: a held-out pw.x set drawn like the `fast` distillation pool (half its counts, seed 99);
   `evaluate`: the committee's own error on it.

The defaults make the committed Si committee (models/tiny-si): 36 cells of 8-atom cubic diamond Si (ASE's reference
structure, a = 5.43 A). Any element or set of elements of the pseudo family works, e.g. Cu:

    python scripts/build_tiny_committee.py dataset --element Cu --prototype fcc --a 3.63 --count 30

Usage (every step takes the same prototype options; outputs go to models/tiny-<name>/, see its README.md):
    python scripts/build_tiny_committee.py dataset --profile pyacemaker   # steps 1-2 (about 5 min for Si)
    python scripts/build_tiny_committee.py train                          # step 3 (a few min)
    python scripts/build_tiny_committee.py testset  # held-out pw.x set drawn like the `fast` distillation pool
    python scripts/build_tiny_committee.py evaluate # the committee's force and energy RMSE on the held-out set
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

import numpy as np

MODELS = pathlib.Path(__file__).resolve().parent.parent / "models"
TEST_SEED = 99
SEEDS = (0, 1, 2)
CANDIDATE_SEED = 2026
CANDIDATE_COUNT = 36


@dataclass(frozen=True)
class Target:
    """What to build: the prototypes, the output folder and its file names."""

    name: str
    prototypes: tuple

    @property
    def out(self) -> pathlib.Path:
        return MODELS / f"tiny-{self.name}"

    @property
    def dataset(self) -> pathlib.Path:
        return self.out / f"{self.name}_dft.xyz"

    @property
    def test_set(self) -> pathlib.Path:
        return self.out / f"{self.name}_test.xyz"

    def model(self, seed: int) -> pathlib.Path:
        return self.out / f"mace_{self.name}_tiny_s{seed}.model"

    @property
    def elements(self) -> list[str]:
        return sorted({symbol for atoms in self.prototypes for symbol in atoms.get_chemical_symbols()})


def make_target(args: argparse.Namespace) -> Target:
    """The prototypes from ``--structures`` (every frame) or ASE's ``bulk`` (``--element``, ``--prototype``, ...)."""
    from ase.build import bulk
    from ase.io import read

    if args.structures:
        prototypes = tuple(read(args.structures, index=":"))
        default_name = pathlib.Path(args.structures).stem
    else:
        try:
            atoms = bulk(args.element, args.prototype, a=args.a, c=args.c, cubic=args.cubic)
        except (KeyError, ValueError, RuntimeError) as exception:
            shape = args.prototype or "(ASE's reference)"
            message = f"--element {args.element} --prototype {shape}: ASE cannot build it: {exception}"
            raise SystemExit(message) from exception
        prototypes = (atoms,)
        default_name = args.element
    name = (args.name or default_name).lower()
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--name {name!r}: use letters, digits, - and _ only (it names models/tiny-<name>/)")
    return Target(name=name, prototypes=prototypes)


def candidates(prototypes: tuple, count: int = CANDIDATE_COUNT, seed: int = CANDIDATE_SEED) -> list:
    """Rattled (0.02-0.15 A), strained (up to 3 %) and defective (one vacancy in six) cells, seeded.

    Cell ``i`` is made from prototype ``i mod len(prototypes)``.
    """
    rng = np.random.default_rng(seed)
    structures = []
    for index in range(count):
        atoms = prototypes[index % len(prototypes)].copy()
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3)) * (index % 3 != 0)
        atoms.set_cell(atoms.cell @ ((strain + strain.T) / 2), scale_atoms=True)
        atoms.positions += rng.normal(scale=rng.uniform(0.02, 0.15), size=atoms.positions.shape)
        if index % 6 == 5 and len(atoms) > 1:
            del atoms[int(rng.integers(len(atoms)))]
        atoms.info = {"config_type": "vacancy" if index % 6 == 5 else "bulk"}
        structures.append(atoms)
    return structures


def test_candidates(prototypes: tuple) -> list:
    """A held-out set drawn like the `fast` distillation pool (same policies, half the counts, another seed)."""
    from aiida_pyacemaker.candidates import make_candidates
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain

    policies = DistillationWorkChain.get_protocol_inputs("fast")["pool"]["policies"]
    halved = {
        name: {**settings, "per_prototype": settings["per_prototype"] // 2} for name, settings in policies.items()
    }
    return make_candidates(list(prototypes), halved, seed=TEST_SEED)


def dft_tier_settings() -> tuple[str, float, str]:
    """(pseudo family, k-point spacing in 1/A, cutoff stringency) of the loop's DFT tier, protocol `fast`."""
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    inputs = TieredOracleWorkChain.get_protocol_inputs("fast")
    meta = inputs["meta_parameters"]
    return meta["pseudo_family"], float(inputs["dft"]["kpoints_distance"]), meta["dft_cutoff_stringency"]


def check_elements(family_label: str, elements: list[str]) -> None:
    """A clear error when the family has no pseudopotential for one of ``elements``."""
    from aiida.orm import load_group

    family = load_group(family_label)
    missing = [element for element in elements if element not in family.elements]
    if missing:
        raise SystemExit(
            f"the pseudo family `{family_label}` has no pseudopotential for {missing}; it has {sorted(family.elements)}"
        )


def label_with_pw(
    profile: str,
    structures: list,
    path: pathlib.Path,
    elements: list[str],
    family: str | None = None,
    kpoints_distance: float | None = None,
    stringency: str | None = None,
    overrides: dict | None = None,
    incremental: bool = False,
) -> list:
    """Label every structure with PwBaseWorkChain (run in this process) and write an extended XYZ file.

    ``family``, ``kpoints_distance`` and ``stringency`` default to the loop's DFT tier (protocol `fast`);
    ``overrides`` are merged into the builder's overrides (e.g. ``pw.parameters``, ``pw.metadata.options``).
    ``incremental``: append each labelled structure to ``path`` as soon as it is done (a crash loses nothing).
    Returns the labelled structures.
    """
    import time

    from aiida import load_profile, orm
    from aiida.engine import run_get_node
    from ase.io import write

    from aiida_pyacemaker.dft import get_pw_builder, number_of_bands, pw_label
    from aiida_pyacemaker.protocols import recursive_merge

    load_profile(profile, allow_switch=True)
    tier_family, tier_kpoints_distance, tier_stringency = dft_tier_settings()
    family = family or tier_family
    kpoints_distance = kpoints_distance or tier_kpoints_distance
    stringency = stringency or tier_stringency
    check_elements(family, elements)
    code = orm.load_code("pw@localhost")
    print(
        f"pw.x settings: family {family}, stringency {stringency}, k-point spacing {kpoints_distance} 1/A", flush=True
    )
    labelled = []
    start = time.monotonic()
    for index, atoms in enumerate(structures):
        # Bands come from the family's valence electrons (aiida_pyacemaker.dft): no restart for "insufficient bands".
        structure = orm.StructureData(ase=atoms)
        merged = recursive_merge({"kpoints_distance": kpoints_distance}, overrides or {})
        builder = get_pw_builder(code, structure, family, stringency=stringency, overrides=merged)
        _, node = run_get_node(builder)
        if not node.is_finished_ok:
            print(f"structure {index}: PwBaseWorkChain<{node.pk}> failed, skipped", file=sys.stderr)
            continue
        label = pw_label(node)  # type: ignore[arg-type]  # run_get_node types its node as a ProcessNode
        atoms.info.update(REF_energy=label["energy"], REF_stress=label["stress"], pw_workchain_uuid=node.uuid)
        atoms.arrays["REF_forces"] = label["forces"]
        labelled.append(atoms)
        if incremental:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path, atoms, format="extxyz", append=True)
        bands = number_of_bands(structure, family)
        print(
            f"structure {index}: {len(atoms)} atoms, {bands} bands, E = {label['energy']:.4f} eV "
            f"(PwBaseWorkChain<{node.pk}>, {time.monotonic() - start:.0f} s so far)",
            flush=True,
        )
    if not incremental:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, labelled, format="extxyz")
    print(f"wrote {len(labelled)} labelled structures to {path} in {time.monotonic() - start:.0f} s")
    return labelled


def train_committee(profile: str, target: Target) -> None:
    """Train one model per seed with MaceTrainCalculation (protocol `fast`) and copy the models to the folder."""
    from aiida import load_profile, orm
    from aiida.engine import run_get_node
    from ase.io import read

    from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation
    from aiida_pyacemaker.data import LabelledStructuresData
    from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain

    load_profile(profile, allow_switch=True)
    training_set = LabelledStructuresData.from_atoms(list(read(target.dataset, index=":")), source="dft")
    _, node = run_get_node(
        MaceTrainCalculation,
        code=orm.load_code("mace-train@localhost"),
        training_set=training_set,
        seeds=orm.List(list(SEEDS)),
        parameters=orm.Dict(MaceTrainBaseWorkChain.get_protocol_inputs("fast")["mace_train"]["parameters"]),
    )
    if not node.is_finished_ok:
        raise SystemExit(f"MaceTrainCalculation<{node.pk}> failed: {node.exit_message}")
    for seed in SEEDS:
        path = target.model(seed)
        path.write_bytes(node.outputs.models[f"s{seed}"].get_content(mode="rb"))
        print(f"wrote {path}")
    for key, metrics in node.outputs.metrics.get_dict().items():
        rmse = {name: value for name, value in metrics.items() if "rmse" in name}
        print(f"{key} (MaceTrainCalculation<{node.pk}>): epochs {metrics['epochs']}, {rmse}")


def evaluate_committee(target: Target) -> dict[str, float]:
    """Force (meV/A) and energy (meV/atom) RMSE of each model and of the committee mean on the held-out set."""
    from ase.io import read
    from mace.calculators import MACECalculator

    frames = read(target.test_set, index=":")
    paths = [str(target.model(seed)) for seed in SEEDS]
    calculator = MACECalculator(model_paths=paths, device="cpu", default_dtype="float64")
    force_errors, energy_errors = [], []
    for atoms in frames:
        reference_forces = atoms.arrays["REF_forces"]
        reference_energy = atoms.info["REF_energy"]
        probe = atoms.copy()
        probe.calc = calculator
        probe.get_potential_energy()
        forces = np.asarray(calculator.results["forces_comm"])  # (models, atoms, 3)
        energies = np.asarray(calculator.results["energy_comm"])  # (models,)
        force_errors.append(np.concatenate([forces, forces.mean(axis=0, keepdims=True)]) - reference_forces)
        energy_errors.append((np.append(energies, energies.mean()) - reference_energy) / len(atoms))
    forces_rmse = np.sqrt(np.mean(np.concatenate([e.reshape(len(SEEDS) + 1, -1) for e in force_errors], 1) ** 2, 1))
    energy_rmse = np.sqrt(np.mean(np.square(energy_errors), axis=0))
    result = {}
    for index, key in enumerate([*(f"s{seed}" for seed in SEEDS), "mean"]):
        result[f"{key}_force_rmse_mev_per_a"] = 1000 * float(forces_rmse[index])
        result[f"{key}_energy_rmse_mev_per_atom"] = 1000 * float(energy_rmse[index])
        print(
            f"{key}: force RMSE {result[f'{key}_force_rmse_mev_per_a']:.1f} meV/A, "
            f"energy RMSE {result[f'{key}_energy_rmse_mev_per_atom']:.1f} meV/atom on {len(frames)} held-out cells"
        )
    largest = max(float(np.abs(np.asarray(a.arrays["REF_forces"])).max()) for a in frames)
    print(f"largest DFT force component in the held-out set: {largest:.3f} eV/A")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["dataset", "train", "testset", "evaluate"])
    parser.add_argument("--profile", default="pyacemaker")
    prototype = parser.add_argument_group("prototype (ASE bulk, or any structure file)")
    prototype.add_argument("--element", default="Si", help="ASE bulk name: an element or a compound such as SiGe.")
    prototype.add_argument(
        "--prototype",
        default=None,
        help="crystal structure (fcc, bcc, diamond, ...); default: ASE's reference structure of the element",
    )
    prototype.add_argument("--a", type=float, default=None, help="lattice constant (A); default: ASE's reference")
    prototype.add_argument("--c", type=float, default=None)
    prototype.add_argument("--cubic", action=argparse.BooleanOptionalAction, default=True, help="conventional cell")
    prototype.add_argument("--structures", default=None, help="prototypes from a file ASE reads (every frame)")
    parser.add_argument("--name", default=None, help="output folder models/tiny-<name>; default: the element")
    parser.add_argument("--count", type=int, default=CANDIDATE_COUNT, help="training cells (dataset step)")
    parser.add_argument("--seed", type=int, default=CANDIDATE_SEED, help="seed of the training cells")
    args = parser.parse_args()
    target = make_target(args)
    if args.step == "dataset":
        structures = candidates(target.prototypes, args.count, args.seed)
        label_with_pw(args.profile, structures, target.dataset, target.elements)
    elif args.step == "testset":
        label_with_pw(args.profile, test_candidates(target.prototypes), target.test_set, target.elements)
    elif args.step == "train":
        train_committee(args.profile, target)
    else:
        evaluate_committee(target)


if __name__ == "__main__":
    main()
