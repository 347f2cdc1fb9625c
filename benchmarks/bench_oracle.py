"""TieredOracleWorkChain overhead: 1000 small Si structures, all accepted by MACE, versus the committee in-process.

The work chain (``run``, storing the input set included) does one MaceCalculation, routes and assembles the
labelled set; the in-process side is a MACECalculator loop over the same structures with the same three models.
Last line: ``oracle_overhead_ratio=<workchain/inprocess>`` (target <= 1.25).
Usage: python benchmarks/bench_oracle.py [--count 1000]
"""

from __future__ import annotations

import argparse
import pathlib
import time

from _profile import temporary_profile
from bench_mace_tier import in_process, structures

TINY_SI = pathlib.Path(__file__).resolve().parent.parent / "models" / "tiny-si"


def through_work_chain(model_paths: list[str], atoms_list: list) -> tuple[float, dict]:
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_pyacemaker.data import MaceModelData, StructureSetData
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    models = {f"m{index}": MaceModelData.from_file(path) for index, path in enumerate(model_paths)}
    start = time.perf_counter()
    _, node = run_get_node(
        TieredOracleWorkChain,
        structures=StructureSetData.from_atoms(atoms_list).store(),
        mace={"mace": {"code": orm.load_code("mace@localhost"), "models": models}},
        uncertainty_threshold=orm.Float(1e6),
        threshold_call_dft=orm.Float(1e6),
        max_dft_calls=orm.Int(0),
    )
    wall = time.perf_counter() - start
    assert node.is_finished_ok, node.exit_message
    assert len(node.outputs.labelled) == len(atoms_list)
    return wall, node.outputs.routing.base.attributes.get("counts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    temporary_profile()
    model_paths = sorted(str(path) for path in TINY_SI.glob("mace_si_tiny_s*.model"))
    atoms_list = structures(args.count)
    workchain_wall, counts = through_work_chain(model_paths, atoms_list)
    inprocess_wall = in_process(model_paths, atoms_list)
    print(f"structures={args.count} routes={counts}")
    print(f"workchain_wall_s={workchain_wall:.2f} inprocess_wall_s={inprocess_wall:.2f}")
    print(f"oracle_overhead_ratio={workchain_wall / inprocess_wall:.3f}")


if __name__ == "__main__":
    main()
