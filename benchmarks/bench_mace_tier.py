"""MACE tier through AiiDA versus the same committee in-process.

1000 rattled Si structures (8, 16, 32 and 64 atoms): one MaceCalculation (``run``; storing the structures as one
``StructureSetData`` included) versus a loop over ``MACECalculator`` with the same three models, same dtype,
same run.
Last line: ``mace_tier_overhead_ratio=<aiida_wall/inprocess_wall>`` (target <= 1.25).
Usage: python benchmarks/bench_mace_tier.py [--count 1000]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
from _profile import temporary_profile

TINY_SI = pathlib.Path(__file__).resolve().parent.parent / "models" / "tiny-si"


def structures(count: int, seed: int = 0) -> list:
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    base = bulk("Si", "diamond", a=5.43, cubic=True)
    repeats = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)]
    cells = []
    for index in range(count):
        atoms = base.repeat(repeats[index % len(repeats)])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        cells.append(atoms)
    return cells


def in_process(model_paths: list[str], atoms_list: list) -> float:
    from mace.calculators import MACECalculator

    start = time.perf_counter()
    calculator = MACECalculator(model_paths=model_paths, device="cpu", default_dtype="float64")
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = calculator
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return time.perf_counter() - start


def through_aiida(model_paths: list[str], atoms_list: list) -> tuple[float, float, dict]:
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_pyacemaker.calculations.mace import MaceCalculation
    from aiida_pyacemaker.data import MaceModelData, StructureSetData

    models = {f"m{index}": MaceModelData.from_file(path) for index, path in enumerate(model_paths)}
    start = time.perf_counter()
    structure_set = StructureSetData.from_atoms(atoms_list).store()
    stored = time.perf_counter() - start
    code = orm.load_code("mace@localhost")
    _, node = run_get_node(MaceCalculation, code=code, models=models, structure_set=structure_set)
    wall = time.perf_counter() - start
    assert node.is_finished_ok, node.exit_message
    return wall, stored, node.outputs.results.status_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    temporary_profile()
    model_paths = sorted(str(path) for path in TINY_SI.glob("mace_si_tiny_s*.model"))
    atoms_list = structures(args.count)
    aiida_wall, store_wall, counts = through_aiida(model_paths, atoms_list)
    inprocess_wall = in_process(model_paths, atoms_list)
    print(f"structures={args.count} models={len(model_paths)} statuses={counts}")
    print(f"aiida_wall_s={aiida_wall:.2f} (storing the structure set: {store_wall:.2f} s)")
    print(f"inprocess_wall_s={inprocess_wall:.2f}")
    print(f"mace_tier_overhead_ratio={aiida_wall / inprocess_wall:.3f}")


if __name__ == "__main__":
    main()
