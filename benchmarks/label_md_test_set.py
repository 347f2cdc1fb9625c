"""Label a held-out MD test set (64-atom Si, the teacher's MD at 600 K and 1200 K) with pw.x once, and ship it.

Frames: the foundation-class teacher (``models/si-foundation``, one MACE model, float64, CPU) drives ASE Langevin
NVT on the 2x2x2 cubic diamond supercell (64 atoms, a = 5.43 A): timestep 1 fs, friction 0.02 / fs, centre of mass
fixed, Maxwell-Boltzmann velocities at the temperature (seeded), 300 steps of equilibration, then one frame every
150 steps, ``--frames`` per temperature. The frames are labelled as ``label_reference_sets.py`` labels its sets:
real pw.x through the ``TieredOracleWorkChain`` with zero thresholds (every row to DFT), with the DFT settings of
the benchmark's loop (``bench_distillation.ORACLE`` on the loop's protocol; the 64-atom cell fixes the bands;
k-spacing 0.6 1/A gives one k-point), chunk by chunk (a rerun resumes). Written to
``benchmarks/data/si_md64_dft.xyz.gz`` (:func:`md_test_path`): ``REF_energy``, ``REF_forces``, ``REF_stress`` as in
the other shipped sets, and ``row``, ``temperature`` (K) and ``md_step`` on every frame (``config_type`` ``md600K``
/ ``md1200K``). ``--probe`` labels the first frame alone and prints its pw.x time; pw.x is cached, so a run in the
same ``--workdir`` takes that frame from the cache.

Usage: python benchmarks/label_md_test_set.py [--frames 6 --chunk 2 --concurrent 1 --probe --workdir DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import time

from _profile import temporary_profile

DATA = pathlib.Path(__file__).resolve().parent / "data"
TEMPERATURES = (600, 1200)
MD_SEED = 31337
TIMESTEP_FS = 1.0
FRICTION_PER_FS = 0.02
EQUILIBRATION_STEPS = 300
FRAME_INTERVAL = 150


def md_test_path() -> pathlib.Path:
    """Where the shipped pw.x labels of the 64-atom MD test set live."""
    return DATA / "si_md64_dft.xyz.gz"


def supercell():
    """The 64-atom cubic diamond Si cell the MD starts from."""
    from ase.build import bulk

    return bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)


def md_frames(model: pathlib.Path, frames: int) -> list:
    """``frames`` snapshots per temperature of the teacher's Langevin NVT, ``temperature`` and ``md_step`` in info."""
    import numpy as np
    import torch
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from mace.calculators import MACECalculator

    torch.set_num_threads(1)  # 64 atoms gain little from threads, and lose much to them on a busy machine
    calculator = MACECalculator(model_paths=str(model), device="cpu", default_dtype="float64")
    snapshots = []
    for temperature in TEMPERATURES:
        begin = time.perf_counter()
        atoms = supercell()
        atoms.calc = calculator
        rng = np.random.default_rng(MD_SEED + temperature)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        atoms.set_constraint(FixCom())
        dynamics = Langevin(
            atoms,
            TIMESTEP_FS * units.fs,
            temperature_K=temperature,
            friction=FRICTION_PER_FS / units.fs,
            fixcm=False,
            rng=rng,
        )
        dynamics.run(EQUILIBRATION_STEPS)
        for _ in range(frames):
            dynamics.run(FRAME_INTERVAL)
            frame = supercell()
            frame.positions = atoms.positions
            frame.info.update(config_type=f"md{temperature}K", temperature=temperature, md_step=dynamics.nsteps)
            snapshots.append(frame)
        print(
            f"MD at {temperature} K: {dynamics.nsteps} steps in {time.perf_counter() - begin:.0f} s, "
            f"final T {atoms.get_temperature():.0f} K",
            flush=True,
        )
    return snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6, help="frames per temperature")
    parser.add_argument("--chunk", type=int, default=2)
    parser.add_argument("--concurrent", type=int, default=1, help="pw.x jobs at a time")
    parser.add_argument("--probe", action="store_true", help="label the first frame only, print its time")
    parser.add_argument("--workdir", default=None, help="AIIDA_PATH to keep")
    args = parser.parse_args()
    path = md_test_path()
    if path.exists() and not args.probe:
        print(f"{path} exists")
        return
    temporary_profile("bench-md-test", args.workdir)

    from aiida import orm
    from aiida.engine import run_get_node
    from aiida.manage import get_manager
    from bench_distillation import FOUNDATION, ORACLE, TINY_SI
    from label_reference_sets import label_in_chunks

    from aiida_pyacemaker.data import MaceModelData, StructureSetData
    from aiida_pyacemaker.protocols import builder_inputs
    from aiida_pyacemaker.setup.caching import ensure_caching
    from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY, ensure_pseudo_family
    from aiida_pyacemaker.workflows.tiered_oracle import TieredOracleWorkChain

    atoms = md_frames(FOUNDATION, 1 if args.probe else args.frames)
    ensure_caching(get_manager().get_profile().name)
    ensure_pseudo_family(DEFAULT_FAMILY)
    codes = {name: orm.load_code(f"{name}@localhost") for name in ("mace", "pw")}
    committee = {f"m{i}": MaceModelData.from_file(p) for i, p in enumerate(sorted(TINY_SI.glob("*.model")))}
    builder = TieredOracleWorkChain.get_builder_from_protocol(
        codes["mace"], committee, codes["pw"], orm.StructureData(ase=supercell()), overrides=ORACLE
    )
    dft_inputs = builder_inputs(builder.dft)
    system = dft_inputs["pw"]["parameters"].get_dict()["SYSTEM"]
    print(
        f"DFT: {DEFAULT_FAMILY}, ecutwfc {system['ecutwfc']} Ry, ecutrho {system['ecutrho']} Ry, nbnd "
        f"{system.get('nbnd')}, kpoints_distance {dft_inputs['kpoints_distance'].value} 1/A",
        flush=True,
    )

    def label_chunk(chunk: list, start: int) -> list:
        structures = StructureSetData.from_atoms(chunk)
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
        for work in sorted((n for n in node.called if n.process_label == "PwBaseWorkChain"), key=lambda n: n.pk):
            calc = max((c for c in work.called if c.process_label == "PwCalculation"), key=lambda c: c.pk)
            kpoints = calc.inputs.kpoints.get_kpoints_mesh()[0]
            print(
                f"  {work.label or work.pk}: pw.x wall {calc.outputs.output_parameters['wall_time_seconds']:.0f} s, "
                f"workchain {(work.mtime - work.ctime).total_seconds():.0f} s, k-mesh {kpoints}",
                flush=True,
            )
        labelled = node.outputs.labelled.to_labelled_atoms()
        for offset, frame in enumerate(labelled):
            frame.info["row"] = start + offset
            frame.info["temperature"] = chunk[offset].info["temperature"]
            frame.info["md_step"] = chunk[offset].info["md_step"]
        return labelled

    if args.probe:
        begin = time.perf_counter()
        label_chunk(atoms[:1], 0)
        print(f"one 64-atom frame: {time.perf_counter() - begin:.0f} s through the oracle", flush=True)
        return
    DATA.mkdir(exist_ok=True)
    label_in_chunks(atoms, path, args.chunk, label_chunk)


if __name__ == "__main__":
    main()
