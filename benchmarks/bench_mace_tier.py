"""MACE tier through AiiDA versus the same committee code in-process, batched the same way.

1000 rattled Si structures (8, 16, 32 and 64 atoms), the three tiny models. AiiDA side: one MaceCalculation
(``run``; storing the structures as one ``StructureSetData``, writing the job's files, the job's own Python process
(its start and its import of torch and mace included), retrieving and parsing). In-process side: the committee script
the job runs (``executables/mace_committee.py``), its ``run(args)`` called in this process with the job's default
parameters (batch_size 16, max_batch_atoms 512, float64, same screening). Imports (torch, mace, the script, AiiDA)
happen before either clock starts. The two sides run alternately, ``--repeats`` times each; the ratio is of the best
walls.
Last line: ``mace_tier_overhead_ratio=<aiida_wall/inprocess_wall>`` (target <= 1.25).
Usage: python benchmarks/bench_mace_tier.py [--count 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from _baseline import COMMITTEE_IMPORTS, batched_committee, committee_script, model_paths, same_results, walls
from _profile import poll_interval, temporary_profile


def structures(count: int, seed: int = 0) -> list:
    """``count`` rattled Si cells, 8, 16, 32 and 64 atoms in turn."""
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


def import_everything() -> None:
    """What either side imports, before any clock starts."""
    committee_script()
    from aiida.engine import run_get_node  # noqa: F401

    from aiida_pyacemaker.calculations.mace import MaceCalculation  # noqa: F401
    from aiida_pyacemaker.data import MaceModelData, StructureSetData  # noqa: F401
    from aiida_pyacemaker.parsers.mace import MaceParser  # noqa: F401


def job_python_start() -> float:
    """Seconds for a fresh Python to import what the committee script imports (the job pays it, the in-process side
    does not)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {', '.join(COMMITTEE_IMPORTS)}"], check=True, capture_output=True)
    return time.perf_counter() - start


def through_aiida(models: list[str], atoms_list: list):
    """(wall, seconds storing the set, the finished MaceCalculation node)."""
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_pyacemaker.calculations.mace import MaceCalculation
    from aiida_pyacemaker.data import MaceModelData, StructureSetData

    model_nodes = {f"m{index}": MaceModelData.from_file(path) for index, path in enumerate(models)}
    code = orm.load_code("mace@localhost")
    start = time.perf_counter()
    structure_set = StructureSetData.from_atoms(atoms_list).store()
    stored = time.perf_counter() - start
    _, node = run_get_node(MaceCalculation, code=code, models=model_nodes, structure_set=structure_set)
    wall = time.perf_counter() - start
    assert node.is_finished_ok, node.exit_message
    assert not node.base.caching.is_created_from_cache
    return wall, stored, node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    args = parser.parse_args()
    temporary_profile()
    import_everything()
    models = model_paths()
    atoms_list = structures(args.count)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-mace-tier-"))
    inprocess, aiida, stores = [], [], []
    for _ in range(args.repeats):
        inprocess_wall, results = batched_committee(models, atoms_list, workdir)
        aiida_wall, store_wall, node = through_aiida(models, atoms_list)
        inprocess.append(inprocess_wall)
        aiida.append(aiida_wall)
        stores.append(store_wall)
    difference = same_results(results, node.outputs.results)
    print(f"structures={args.count} models={len(models)} statuses={node.outputs.results.status_counts}")
    print(f"max |uncertainty difference| in-process vs job: {difference:.1e} eV/A")
    print(
        f"aiida_wall_s={walls(aiida)} (storing the structure set: {max(stores):.2f} s at most; "
        f"a fresh Python importing torch and mace, measured apart: {job_python_start():.2f} s; "
        f"localhost polls the scheduler every {poll_interval():.0f} s)"
    )
    print(f"inprocess_wall_s={walls(inprocess)} (batched committee script, run(args) in this process)")
    print(f"mace_tier_overhead_ratio={min(aiida) / min(inprocess):.3f}")


if __name__ == "__main__":
    main()
