"""Build an offline "foundation-class" Si MACE teacher (models/si-foundation), a stand-in for MACE-MP-0 small.

One MACE model of MACE-MP-0 small's architecture (64 channels, max_L 0, correlation 3, 2 interactions, r_max 5 A),
trained on a broad Si set (diamond equation of state, beta-Sn, simple hexagonal/cubic, hot rattles, point defects,
slabs), labelled by real pw.x through the plugin (PwBaseWorkChain, `aiida_pyacemaker.dft.get_pw_builder`) with a
DIFFERENT pseudopotential than the campaign's DFT tier: Debian's norm-conserving Si.pbe-rrkj.UPF (family
`pyacemaker/foundation-nc/PBE`, 30/120 Ry, k-point spacing 0.4 1/A, cold smearing 0.0275 Ry). Like a real foundation
model it carries a systematic offset against the user's DFT (Si.pbe-nl-rrkjus_psl.1.0.0.UPF, models/tiny-si).

Usage (outputs in models/si-foundation/, see its README.md; labelling and training reuse build_tiny_committee.py):
    python scripts/build_foundation_model.py cutoffs   # force convergence of the NC cutoffs on one rattled cell
    python scripts/build_foundation_model.py dataset   # generate and label the cells (resumable, about 45 min)
    python scripts/build_foundation_model.py train     # one MaceTrainCalculation (about 25 min on 2 cores)
    python scripts/build_foundation_model.py evaluate  # own held-out cells and the campaign's si_test.xyz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
from collections import Counter
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from build_tiny_committee import MODELS, label_with_pw

OUT = MODELS / "si-foundation"
DATASET = OUT / "si_foundation_dft.xyz"  # every labelled cell (train and test), appended as pw.x finishes
TEST_SET = OUT / "si_foundation_test.xyz"  # the held-out cells (split == "test"), never trained on
MODEL = OUT / "mace_si_foundation.model"
CAMPAIGN_SETS = (MODELS / "tiny-si" / "si_test.xyz", MODELS / "tiny-si" / "si_dft.xyz")

FAMILY = "pyacemaker/foundation-nc/PBE"
PSEUDO = pathlib.Path("/usr/share/espresso/pseudo/Si.pbe-rrkj.UPF")
CUTOFFS_RY = (30.0, 120.0)  # norm-conserving: ecutrho = 4 x ecutwfc
KPOINTS_DISTANCE = 0.4
#: One pw.x process, one thread: the machine is shared.
PW_OVERRIDES = {
    "clean_workdir": True,
    "pw": {"metadata": {"options": {"environment_variables": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}}}},
}

SEED = 1717
#: Cells per kind; cell i of a kind only depends on SEED and i, so raising a count keeps the labelled cells.
#: Sized to the ~50 min of pw.x that one core of a busy machine gave (load 4-9; measured per cell: 11-20 s for 2-4
#: atoms, 20-45 s for 8, 50-80 s for slabs, 90-130 s for 15-17 atoms).
COUNTS = {
    "diamond_eos": 17,
    "beta_sn": 14,
    "simple_hexagonal": 16,
    "hot_rattle": 17,
    "point_defect": 6,
    "slab": 8,
}
TEST_EVERY = 10  # cell i of a kind is held out when i % 10 == 5
A_DIAMOND = 5.43
MIN_DISTANCE = 1.9  # A; Si-Si bonds are 2.35 A

SEEDS = (7,)
TRAIN_PARAMETERS = {
    "model": "MACE",
    "num_channels": 64,
    "max_L": 0,
    "correlation": 3,
    "num_interactions": 2,
    "r_max": 5.0,
    "E0s": "average",
    "loss": "stress",
    "compute_stress": True,
    "energy_weight": 10.0,
    "forces_weight": 100.0,
    "stress_weight": 100.0,
    "error_table": "PerAtomRMSEstressvirials",
    "batch_size": 8,
    "valid_batch_size": 8,
    "lr": 0.01,
    "scheduler_patience": 15,
    "ema": True,
    "ema_decay": 0.99,
    "max_num_epochs": 300,
    "default_dtype": "float64",
    "device": "cpu",
    "valid_fraction": 0.1,
}
TRAIN_OPTIONS = {"max_wallclock_seconds": 3600, "environment_variables": {"OMP_NUM_THREADS": "2"}}


def rattled(atoms, rng: np.random.Generator, sigma: float):
    """``atoms`` with Gaussian displacements of RMS length ``sigma`` (A); redrawn while two atoms are closer than
    ``MIN_DISTANCE`` (a thermal-like sample, not a collision)."""
    for _ in range(100):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=sigma / 3**0.5, size=atoms.positions.shape)
        if len(moved) == 1 or moved.get_all_distances(mic=True)[np.triu_indices(len(moved), 1)].min() >= MIN_DISTANCE:
            return moved
    raise RuntimeError(f"no rattle of sigma {sigma} A keeps the atoms {MIN_DISTANCE} A apart")


def deformed(atoms, rng: np.random.Generator, volume_scale: float, shear: float = 0.0):
    """``atoms`` scaled to ``volume_scale`` x its volume, with a random symmetric shear of up to ``shear``."""
    atoms = atoms.copy()
    strain = np.eye(3) * volume_scale ** (1 / 3)
    off = rng.uniform(-shear, shear, size=(3, 3))
    strain = strain + (off + off.T) / 2 - np.diag(np.diag(off))
    atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
    return atoms


def diamond_eos(rng: np.random.Generator, index: int):
    """Diamond Si from -10 % to +10 % volume: primitive (2 atoms) or conventional (8), one in three sheared."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=A_DIAMOND, cubic=index % 5 >= 3)
    atoms = deformed(atoms, rng, rng.uniform(0.90, 1.10), shear=0.05 * (index % 3 == 2))
    return rattled(atoms, rng, rng.uniform(0.0, 0.04)), f"diamond-{len(atoms)}"


def beta_sn(rng: np.random.Generator, index: int):
    """beta-Sn Si (I4_1/amd, 4-atom cell; 8 atoms for every fourth), volume 0.88-1.15 x 15.3 A^3/atom, c/a +-6 %."""
    from ase.spacegroup import crystal

    c_over_a = 0.552 * rng.uniform(0.94, 1.06)
    atoms = crystal("Si", [(0, 0, 0)], spacegroup=141, cellpar=[4.80, 4.80, 4.80 * c_over_a, 90, 90, 90])
    atoms = deformed(atoms, rng, rng.uniform(0.88, 1.15) * 15.3 * len(atoms) / atoms.get_volume())
    if index % 4 == 3:
        atoms = atoms.repeat((1, 1, 2))
    return rattled(atoms, rng, rng.uniform(0.01, 0.08)), f"beta-sn-{len(atoms)}"


def simple_hexagonal(rng: np.random.Generator, index: int):
    """Simple hexagonal Si (a 2.53, c/a 0.94; 1x1x2 cells) and, every third, simple cubic (2x1x1), 0.88-1.2 x V."""
    from ase import Atoms
    from ase.build import bulk

    if index % 3 == 2:
        atoms, name = bulk("Si", "sc", a=2.53).repeat((2, 1, 1)), "sc"
    else:
        c_over_a = 0.94 * rng.uniform(0.95, 1.05)
        cell = [[2.53, 0, 0], [-2.53 / 2, 2.53 * 3**0.5 / 2, 0], [0, 0, 2.53 * c_over_a]]
        atoms, name = Atoms("Si", cell=cell, pbc=True).repeat((1, 1, 2)), "sh"
    atoms = deformed(atoms, rng, rng.uniform(0.88, 1.20), shear=0.03 * (index % 2))
    return rattled(atoms, rng, rng.uniform(0.01, 0.08)), f"{name}-{len(atoms)}"


def diamond_supercell(name: str):
    """8- and 16-atom diamond supercells, cubic and not: conventional 1x1x1 and 1x1x2, primitive 2x2x1 and 2x2x2."""
    from ase.build import bulk

    primitive, cubic = bulk("Si", "diamond", a=A_DIAMOND), bulk("Si", "diamond", a=A_DIAMOND, cubic=True)
    repeats = {"cubic": (cubic, 1, 1, 1), "prim221": (primitive, 2, 2, 1)}
    repeats |= {"conv112": (cubic, 1, 1, 2), "prim222": (primitive, 2, 2, 2)}
    atoms, *repeat = repeats[name]
    return atoms.repeat(repeat)


def hot_rattle(rng: np.random.Generator, index: int):
    """Thermal-like displacements (RMS 0.05-0.3 A) of 8/16-atom diamond supercells, volume +-5 %, small shear."""
    name = ("cubic", "prim221", "conv112", "cubic", "prim221", "prim222")[index % 6]
    atoms = diamond_supercell(name)
    atoms = deformed(atoms, rng, rng.uniform(0.95, 1.05), shear=0.02)
    return rattled(atoms, rng, rng.uniform(0.05, 0.30)), f"rattle-{name}-{len(atoms)}"


def point_defect(rng: np.random.Generator, index: int):
    """A vacancy, a tetrahedral or a hexagonal interstitial in a 16-atom diamond cell, rattled 0.03-0.12 A."""
    name = ("conv112", "prim222")[index % 2]
    atoms = diamond_supercell(name)
    kind = ("vacancy", "tetrahedral", "hexagonal")[index % 3]
    if kind == "vacancy":
        del atoms[int(rng.integers(len(atoms)))]
    else:
        # In the conventional cell, T sites sit at (1/2, 1/2, 1/2) a and H sites half-way to (3/4, 3/4, 3/4) a.
        site = np.array([0.5, 0.5, 0.5] if kind == "tetrahedral" else [0.625, 0.625, 0.625]) * A_DIAMOND
        atoms.append("Si")
        atoms.positions[-1] = site
        atoms.wrap()
    atoms = deformed(atoms, rng, rng.uniform(0.97, 1.03))
    return rattled(atoms, rng, rng.uniform(0.03, 0.12)), f"{kind}-{name}-{len(atoms)}"


def slab(rng: np.random.Generator, index: int):
    """(100) and (111) slabs of 8 or 12 atoms with 10 A of vacuum, rattled 0.03-0.15 A."""
    from ase.build import diamond100, diamond111

    build = (diamond100, diamond111)[index % 2]
    size = ((1, 1, 8), (2, 1, 6))[(index // 2) % 2]
    atoms = build("Si", size=size, a=A_DIAMOND * rng.uniform(0.98, 1.02), vacuum=5.0)
    atoms.pbc = True
    return rattled(atoms, rng, rng.uniform(0.03, 0.15)), f"slab{'100' if index % 2 == 0 else '111'}-{len(atoms)}"


GENERATORS: dict[str, Callable] = {
    "diamond_eos": diamond_eos,
    "beta_sn": beta_sn,
    "simple_hexagonal": simple_hexagonal,
    "hot_rattle": hot_rattle,
    "point_defect": point_defect,
    "slab": slab,
}


def cell_key(atoms) -> str:
    """A short hash of the cell, positions and numbers: which generated cells are labelled already."""
    data = np.concatenate([np.round(atoms.cell.array, 6).ravel(), np.round(atoms.positions, 6).ravel()])
    return "k" + hashlib.sha1(data.tobytes() + atoms.numbers.tobytes()).hexdigest()[:16]


def generate(counts: dict[str, int] = COUNTS, seed: int = SEED) -> list:
    """All cells, kinds interleaved (any prefix is a mixed sample); info: config_type, prototype, key, split."""
    per_kind = []
    for number, (kind, count) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, number])
        cells = []
        for index in range(count):
            atoms, name = GENERATORS[kind](rng, index)
            split = "test" if index % TEST_EVERY == TEST_EVERY // 2 else "train"
            atoms.info = {"config_type": kind, "prototype": name, "split": split, "key": cell_key(atoms)}
            cells.append(atoms)
        per_kind.append(cells)
    longest = max(len(cells) for cells in per_kind)
    return [cells[i] for i in range(longest) for cells in per_kind if i < len(cells)]


def ensure_family() -> None:
    """Install the NC family ``FAMILY`` from Debian's Si.pbe-rrkj.UPF unless it exists; (re)set its cutoffs."""
    import shutil
    import tempfile

    from aiida import orm
    from aiida_pseudo.data.pseudo import UpfData
    from aiida_pseudo.groups.family import CutoffsPseudoPotentialFamily

    found = orm.QueryBuilder().append(CutoffsPseudoPotentialFamily, filters={"label": FAMILY}).first()
    if found:
        family = found[0]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(PSEUDO, tmp)
            family = CutoffsPseudoPotentialFamily.create_from_folder(
                pathlib.Path(tmp), FAMILY, description=f"Norm-conserving PBE Si ({PSEUDO})", pseudo_type=UpfData
            )
        print(f"installed pseudo family {FAMILY}")
    wfc, rho = CUTOFFS_RY
    family.set_cutoffs({"Si": {"cutoff_wfc": wfc, "cutoff_rho": rho}}, "normal", unit="Ry")
    family.set_default_stringency("normal")


def label(profile: str, structures: list, path: pathlib.Path, overrides: dict | None = None) -> list:
    """Label ``structures`` with the foundation DFT settings (build_tiny_committee.label_with_pw), appending to path."""
    from aiida import load_profile

    from aiida_pyacemaker.protocols import recursive_merge

    load_profile(profile, allow_switch=True)
    ensure_family()
    merged = recursive_merge(PW_OVERRIDES, overrides or {})
    return label_with_pw(
        profile, structures, path, ["Si"], FAMILY, KPOINTS_DISTANCE, "normal", merged, incremental=True
    )


def check_cutoffs(profile: str) -> None:
    """Energy, force and stress changes of one rattled 8-atom cell with ecutwfc 30, 40, 50 Ry (ecutrho 4x)."""
    import tempfile

    from ase.build import bulk

    atoms = rattled(bulk("Si", "diamond", a=A_DIAMOND, cubic=True), np.random.default_rng(SEED), 0.1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for wfc in (30.0, 40.0, 50.0):
            system = {"ecutwfc": wfc, "ecutrho": 4 * wfc}
            (result,) = label(
                profile, [atoms.copy()], pathlib.Path(tmp) / f"{wfc}.xyz", {"pw": {"parameters": {"SYSTEM": system}}}
            )
            results[wfc] = result
    reference = results[50.0]
    for wfc, result in results.items():
        force = result.arrays["REF_forces"] - reference.arrays["REF_forces"]
        stress = (result.info["REF_stress"] - reference.info["REF_stress"]) * 160.21766208
        energy = (result.info["REF_energy"] - reference.info["REF_energy"]) / len(atoms)
        print(
            f"ecutwfc {wfc:.0f} Ry: dE {1000 * energy:.2f} meV/atom, max |dF| {1000 * np.abs(force).max():.1f} meV/A, "
            f"RMS dF {1000 * np.sqrt(np.mean(force**2)):.1f} meV/A, max |dstress| {np.abs(stress).max():.3f} GPa "
            f"(max |F| {np.abs(result.arrays['REF_forces']).max():.2f} eV/A)"
        )


def build_dataset(profile: str, limit: int | None) -> None:
    """Label every generated cell not yet in ``DATASET`` (resumable), then write the held-out ``TEST_SET``."""
    from ase.io import read, write

    cells = generate()[:limit]
    done = {atoms.info["key"] for atoms in read(DATASET, index=":")} if DATASET.exists() else set()
    todo = [atoms for atoms in cells if atoms.info["key"] not in done]
    print(f"{len(cells)} cells ({dict(Counter(a.info['config_type'] for a in cells))}), {len(todo)} to label")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "settings.json").write_text(json.dumps(settings(), indent=2) + "\n")
    label(profile, todo, DATASET)
    labelled = read(DATASET, index=":")
    write(TEST_SET, [atoms for atoms in labelled if atoms.info["split"] == "test"], format="extxyz")
    for split in ("train", "test"):
        counts = Counter(a.info["config_type"] for a in labelled if a.info["split"] == split)
        print(f"{split}: {sum(counts.values())} cells {dict(counts)}")


def train(profile: str, epochs: int | None = None) -> None:
    """Train the model (one MaceTrainCalculation through the plugin) on the training cells; copy it to ``MODEL``."""
    import time

    from aiida import load_profile, orm
    from aiida.engine import run_get_node
    from ase.io import read

    from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation
    from aiida_pyacemaker.data import LabelledStructuresData

    load_profile(profile, allow_switch=True)
    cells = [atoms for atoms in read(DATASET, index=":") if atoms.info["split"] == "train"]
    start = time.monotonic()
    _, node = run_get_node(
        MaceTrainCalculation,
        code=orm.load_code("mace-train@localhost"),
        training_set=LabelledStructuresData.from_atoms(cells, source="dft"),
        seeds=orm.List(list(SEEDS)),
        parameters=orm.Dict({**TRAIN_PARAMETERS, "max_num_epochs": epochs or TRAIN_PARAMETERS["max_num_epochs"]}),
        metadata={"options": TRAIN_OPTIONS},
    )
    if not node.is_finished_ok:
        raise SystemExit(f"MaceTrainCalculation<{node.pk}> failed: {node.exit_message}")
    MODEL.write_bytes(node.outputs.models[f"s{SEEDS[0]}"].get_content(mode="rb"))
    metrics = node.outputs.metrics.get_dict()
    print(
        f"wrote {MODEL} after {time.monotonic() - start:.0f} s on {len(cells)} cells (MaceTrainCalculation<{node.pk}>)"
    )
    print(json.dumps(metrics, indent=1))


def errors(calculator, frames: list) -> dict[str, float]:
    """Force RMSE (meV/A), energy RMSE and mean offset model - DFT (meV/atom), energy RMSE without the offset."""
    force_errors, energy_errors = [], []
    for atoms in frames:
        probe = atoms.copy()
        probe.calc = calculator
        energy_errors.append((probe.get_potential_energy() - atoms.info["REF_energy"]) / len(atoms))
        force_errors.append((probe.get_forces() - atoms.arrays["REF_forces"]).ravel())
    energy, forces = np.asarray(energy_errors), np.concatenate(force_errors)
    return {
        "cells": len(frames),
        "force_rmse_mev_per_a": 1000 * float(np.sqrt(np.mean(forces**2))),
        "energy_rmse_mev_per_atom": 1000 * float(np.sqrt(np.mean(energy**2))),
        "energy_mean_offset_mev_per_atom": 1000 * float(energy.mean()),
        "energy_rmse_after_offset_mev_per_atom": 1000 * float(energy.std()),
    }


def evaluate() -> dict:
    """Errors on the held-out cells (all and per kind) and on the campaign's sets (another pseudopotential)."""
    from ase.io import read
    from mace.calculators import MACECalculator

    calculator = MACECalculator(model_paths=[str(MODEL)], device="cpu", default_dtype="float64")
    test = read(TEST_SET, index=":")
    result = {"held_out": errors(calculator, test)}
    for kind in COUNTS:
        result[f"held_out/{kind}"] = errors(calculator, [a for a in test if a.info["config_type"] == kind])
    for path in CAMPAIGN_SETS:
        result[f"campaign/{path.name}"] = errors(calculator, read(path, index=":"))
    for name, values in result.items():
        print(f"{name}: " + ", ".join(f"{key} {value:.1f}" for key, value in values.items()))
    (OUT / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def settings() -> dict:
    """The structure-generation, DFT and training settings (written to settings.json)."""
    return {
        "structures": {"seed": SEED, "counts": COUNTS, "test_every": TEST_EVERY, "a_diamond": A_DIAMOND},
        "dft": {
            "pseudo_family": FAMILY,
            "pseudopotential": str(PSEUDO),
            "ecutwfc_ry": CUTOFFS_RY[0],
            "ecutrho_ry": CUTOFFS_RY[1],
            "kpoints_distance": KPOINTS_DISTANCE,
            "protocol": "fast (aiida-quantumespresso): cold smearing 0.0275 Ry",
        },
        "training": {"seeds": list(SEEDS), "parameters": TRAIN_PARAMETERS, "options": TRAIN_OPTIONS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["cutoffs", "dataset", "train", "evaluate"])
    parser.add_argument("--profile", default="pyacemaker")
    parser.add_argument("--limit", type=int, default=None, help="dataset: label only the first N cells (a timing)")
    parser.add_argument("--epochs", type=int, default=None, help="train: override max_num_epochs (a timing)")
    args = parser.parse_args()
    if args.step == "cutoffs":
        check_cutoffs(args.profile)
    elif args.step == "dataset":
        build_dataset(args.profile, args.limit)
    elif args.step == "train":
        train(args.profile, args.epochs)
    else:
        evaluate()


if __name__ == "__main__":
    main()
