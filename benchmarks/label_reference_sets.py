"""Label ``bench_distillation.py``'s candidate pool and held-out test set with pw.x once, and ship the labels.

Both sets are drawn exactly as the benchmark draws them (same policies and seeds) and labelled by real pw.x through
the ``TieredOracleWorkChain`` with zero thresholds (every row to DFT), with the DFT settings of the benchmark's loop
(``bench_distillation.ORACLE`` on the loop's protocol). The labels are written, chunk by chunk (a rerun resumes),
to ``benchmarks/data/si_pool<N>_dft.xyz.gz`` and ``si_test<M>_dft.xyz.gz``; the benchmark reads them instead of
relabelling 540 cells (85 min on 2 cores) in every run. Each frame keeps its row index and the uuid of the
``PwBaseWorkChain`` that labelled it in this profile.

Usage: python benchmarks/label_reference_sets.py [--pool 500 --test 40 --chunk 50 --workdir DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import time

from _profile import temporary_profile

DATA = pathlib.Path(__file__).resolve().parent / "data"


def reference_path(kind: str, size: int) -> pathlib.Path:
    """Where the shipped labels of the pool (``kind='pool'``) or the test set (``'test'``) of ``size`` cells live."""
    return DATA / f"si_{kind}{size}_dft.xyz.gz"


def label_in_chunks(atoms: list, path: pathlib.Path, chunk: int, label_chunk) -> None:
    """Label ``atoms`` chunk by chunk (one oracle each), keeping finished chunks next to ``path``; then join them."""
    from ase.io import read, write

    parts = []
    for start in range(0, len(atoms), chunk):
        part = path.with_name(f"{path.name}.part{start:05d}.xyz")
        if not part.exists():
            begin = time.perf_counter()
            labelled = label_chunk(atoms[start : start + chunk], start)
            write(part, labelled, format="extxyz")
            print(f"{path.name}: rows {start}-{start + len(labelled) - 1} in {time.perf_counter() - begin:.0f} s")
        parts.extend(read(part, index=":"))
    write(path, parts, format="extxyz")
    for part in path.parent.glob(f"{path.name}.part*.xyz"):
        part.unlink()
    print(f"wrote {len(parts)} labelled cells to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=2, help="pw.x jobs at a time")
    parser.add_argument("--workdir", default=None, help="AIIDA_PATH to keep")
    args = parser.parse_args()
    temporary_profile("bench-reference", args.workdir)

    from aiida import orm
    from aiida.engine import run_get_node
    from ase.build import bulk
    from bench_distillation import ORACLE, POOL_SEED, TEST_SEED, TINY_SI, policies

    from aiida_pyacemaker.candidates import make_candidates
    from aiida_pyacemaker.data import MaceModelData, StructureSetData
    from aiida_pyacemaker.protocols import builder_inputs
    from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY, ensure_pseudo_family
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    ensure_pseudo_family(DEFAULT_FAMILY)
    codes = {name: orm.load_code(f"{name}@localhost") for name in ("mace", "pw")}
    committee = {f"m{i}": MaceModelData.from_file(p) for i, p in enumerate(sorted(TINY_SI.glob("*.model")))}
    prototype = bulk("Si", "diamond", a=5.43, cubic=True)
    builder = TieredOracleWorkChain.get_builder_from_protocol(
        codes["mace"], committee, codes["pw"], orm.StructureData(ase=prototype), overrides=ORACLE
    )
    dft_inputs = builder_inputs(builder.dft)

    def label_chunk(atoms: list, start: int) -> list:
        structures = StructureSetData.from_atoms(atoms)
        _, node = run_get_node(
            TieredOracleWorkChain,
            structures=structures,
            mace={"mace": {"code": codes["mace"], "models": committee}},
            dft=dft_inputs,
            uncertainty_threshold=orm.Float(0.0),
            threshold_call_dft=orm.Float(0.0),
            max_concurrent_dft=orm.Int(args.concurrent),
        )
        assert node.is_finished_ok, node.exit_message
        routes = node.outputs.routing.get_array("route")
        assert (routes == "dft").all(), f"rows {start}+: routes {node.outputs.routing.base.attributes.get('counts')}"
        labelled = node.outputs.labelled.to_labelled_atoms()
        for offset, frame in enumerate(labelled):
            frame.info["row"] = start + offset
        return labelled

    DATA.mkdir(exist_ok=True)
    for kind, size, seed in (("test", args.test, TEST_SEED), ("pool", args.pool, POOL_SEED)):
        path = reference_path(kind, size)
        if path.exists():
            print(f"{path} exists")
            continue
        atoms = make_candidates([prototype], policies(size), seed)
        label_in_chunks(atoms, path, args.chunk, label_chunk)


if __name__ == "__main__":
    main()
