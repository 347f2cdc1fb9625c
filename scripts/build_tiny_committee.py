"""Build the tiny Si MACE committee used by tests and examples, reproducibly.

1. Candidate Si structures (8-atom cubic cells: rattled, strained, one vacancy), seeded.
2. Labelled by real pw.x through the plugin: PwBaseWorkChain with the `pw@localhost` code and the
   `pyacemaker/debian-qe/PBE` family that `aiida-pyacemaker setup` installs (stringency `low`,
   30/240 Ry, k-point spacing 0.45 1/A, cold smearing from the `fast` protocol).
3. Three MACE models (protocol `fast` of protocols/mace_train/base.yaml: 16 channels, max_L 0, r_max 4.5), one
   MaceTrainCalculation with seeds 0, 1, 2 (mace_run_train through the plugin).

Usage:
    python scripts/build_tiny_committee.py dataset --profile pyacemaker   # step 1-2 (about 5 min)
    python scripts/build_tiny_committee.py train                          # step 3 (a few min)
    python scripts/build_tiny_committee.py testset  # held-out pw.x set drawn like the `fast` distillation pool
Outputs go to models/tiny-si/ (see its README.md).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "tiny-si"
DATASET = OUT / "si_dft.xyz"
TEST_SET = OUT / "si_test.xyz"
TEST_SEED = 99
SEEDS = (0, 1, 2)


def candidates(seed: int = 2026) -> list:
    """Rattled, strained and defective 8-atom Si cells."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    structures = []
    for index in range(36):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3)) * (index % 3 != 0)
        atoms.set_cell(atoms.cell @ ((strain + strain.T) / 2), scale_atoms=True)
        atoms.positions += rng.normal(scale=rng.uniform(0.02, 0.15), size=atoms.positions.shape)
        if index % 6 == 5:
            del atoms[int(rng.integers(len(atoms)))]
        atoms.info["config_type"] = "vacancy" if index % 6 == 5 else "bulk"
        structures.append(atoms)
    return structures


def label_with_pw(profile: str, structures: list, path: pathlib.Path) -> None:
    """Label every structure with PwBaseWorkChain (run in this process) and write an extended XYZ file."""
    from aiida import load_profile, orm
    from aiida.engine import run_get_node
    from ase.io import write

    from aiida_pyacemaker.dft import get_pw_builder, pw_label
    from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY

    load_profile(profile, allow_switch=True)
    code = orm.load_code("pw@localhost")
    labelled = []
    for index, atoms in enumerate(structures):
        # Bands come from the family's valence electrons (aiida_pyacemaker.dft): no restart for "insufficient bands".
        overrides = {"kpoints_distance": 0.45}
        structure = orm.StructureData(ase=atoms)
        builder = get_pw_builder(code, structure, DEFAULT_FAMILY, stringency="low", overrides=overrides)
        _, node = run_get_node(builder)
        if not node.is_finished_ok:
            print(f"structure {index}: PwBaseWorkChain<{node.pk}> failed, skipped", file=sys.stderr)
            continue
        label = pw_label(node)
        atoms.info.update(REF_energy=label["energy"], REF_stress=label["stress"], pw_workchain_uuid=node.uuid)
        atoms.arrays["REF_forces"] = label["forces"]
        labelled.append(atoms)
        print(f"structure {index}: E = {label['energy']:.4f} eV (PwBaseWorkChain<{node.pk}>)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    write(path, labelled, format="extxyz")
    print(f"wrote {len(labelled)} labelled structures to {path}")


def test_candidates() -> list:
    """A held-out set drawn like the `fast` distillation pool (same policies, half the counts, another seed)."""
    from ase.build import bulk

    from aiida_pyacemaker.candidates import make_candidates
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain

    policies = DistillationWorkChain.get_protocol_inputs("fast")["pool"]["policies"]
    halved = {
        name: {**settings, "per_prototype": settings["per_prototype"] // 2} for name, settings in policies.items()
    }
    return make_candidates([bulk("Si", "diamond", a=5.43, cubic=True)], halved, seed=TEST_SEED)


def train_committee(profile: str) -> None:
    """Train one model per seed with MaceTrainCalculation (protocol `fast`) and copy the models to OUT."""
    from aiida import load_profile, orm
    from aiida.engine import run_get_node
    from ase.io import read

    from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation
    from aiida_pyacemaker.data import LabelledStructuresData
    from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain

    load_profile(profile, allow_switch=True)
    training_set = LabelledStructuresData.from_atoms(read(DATASET, index=":"), source="dft")
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
        target = OUT / f"mace_si_tiny_s{seed}.model"
        target.write_bytes(node.outputs.models[f"s{seed}"].get_content(mode="rb"))
        print(f"wrote {target}")
    for key, metrics in node.outputs.metrics.get_dict().items():
        rmse = {name: value for name, value in metrics.items() if "rmse" in name}
        print(f"{key} (MaceTrainCalculation<{node.pk}>): epochs {metrics['epochs']}, {rmse}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["dataset", "train", "testset"])
    parser.add_argument("--profile", default="pyacemaker")
    args = parser.parse_args()
    if args.step == "dataset":
        label_with_pw(args.profile, candidates(), DATASET)
    elif args.step == "testset":
        label_with_pw(args.profile, test_candidates(), TEST_SET)
    else:
        train_committee(args.profile)


if __name__ == "__main__":
    main()
