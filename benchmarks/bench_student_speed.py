"""Speed of the student (ACE) against a MACE model of MACE-MP-0-medium size, on 64- and 256-atom Si, one thread.

MACE: an untrained ScaleShiftMACE with the medium foundation model's shape (128 channels, max_L 1, r_max 6 A,
2 interactions, correlation 3, 8 Bessel functions, radial MLP [64, 64, 64]), float64 and float32; the cost of
a step does not depend on the weights. ACE: the potential the distillation loop produces with the `fast`
protocol's basis (and, for reference, the `balanced` basis), fitted by PacemakerCalculation on
models/tiny-si/si_dft.xyz (a short fit: the cost of a step does not depend on the weights either).
A step is energy + forces of a displaced cell (ASE calculators), timed after one warm-up step.

Last line: ``ace_over_mace_speed=<mace s per step / ace s per step>`` for the `fast` ACE against MACE float32
(the faster MACE), the worse of the two cell sizes (target >= 20).
Usage: OMP_NUM_THREADS=1 python benchmarks/bench_student_speed.py [--steps 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy, torch or pyace start their thread pools

import argparse
import pathlib
import tempfile
import time

import numpy as np
from _profile import temporary_profile

TINY_SI = pathlib.Path(__file__).resolve().parent.parent / "models" / "tiny-si"


def medium_mace(path: pathlib.Path, dtype: str) -> None:
    """Save an untrained MACE with MACE-MP-0-medium's architecture for Si."""
    import torch
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(getattr(torch, dtype))
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=6.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        num_interactions=2,
        num_elements=1,
        hidden_irreps=o3.Irreps("128x0e + 128x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([-5.0]),
        avg_num_neighbors=40.0,
        atomic_numbers=[14],
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    torch.save(model, path)


def fitted_ace(protocol: str, maxiter: int):
    """An ACE potential with the basis of ``protocol``, from a short PacemakerCalculation."""
    from aiida import orm
    from aiida.engine import run_get_node
    from ase.io import read

    from aiida_pyacemaker.calculations.pacemaker import PacemakerCalculation
    from aiida_pyacemaker.data import LabelledStructuresData
    from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain

    parameters = {
        **PacemakerBaseWorkChain.get_protocol_inputs(protocol)["pacemaker"]["parameters"],
        "maxiter": maxiter,
        "active_set": False,
    }
    training = LabelledStructuresData.from_atoms(read(TINY_SI / "si_dft.xyz", index=":"), source="dft")
    _, node = run_get_node(
        PacemakerCalculation,
        code=orm.load_code("pacemaker@localhost"),
        training_set=training,
        parameters=orm.Dict(parameters),
    )
    assert node.is_finished_ok, node.exit_message
    return node.outputs.potential


def seconds_per_step(calculator, atoms, steps: int) -> float:
    rng = np.random.default_rng(0)
    atoms = atoms.copy()
    atoms.calc = calculator
    atoms.get_forces()  # warm-up: neighbour lists, compilation, allocation
    start = time.perf_counter()
    for _ in range(steps):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        atoms.get_potential_energy()
        atoms.get_forces()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--maxiter", type=int, default=10, help="iterations of the (speed-only) ACE fits")
    args = parser.parse_args()

    import torch
    from ase.build import bulk
    from mace.calculators import MACECalculator

    torch.set_num_threads(1)
    temporary_profile()
    aces = {protocol: fitted_ace(protocol, args.maxiter) for protocol in ("fast", "balanced")}
    cells = {n: bulk("Si", "diamond", a=5.43, cubic=True) * reps for n, reps in ((64, (2, 2, 2)), (256, (4, 4, 2)))}
    folder = pathlib.Path(tempfile.mkdtemp(prefix="mace-medium-"))
    timings: dict[str, dict[int, float]] = {}
    for dtype in ("float32", "float64"):
        path = folder / f"mace_medium_{dtype}.model"
        medium_mace(path, dtype)
        calculator = MACECalculator(model_paths=str(path), device="cpu", default_dtype=dtype)
        timings[f"mace_{dtype}"] = {n: seconds_per_step(calculator, atoms, args.steps) for n, atoms in cells.items()}
    for protocol, potential in aces.items():
        calculator = potential.get_calculator(active_set=False, total_energy=False)
        label = f"ace_{protocol}_{potential.num_functions}_functions"
        timings[label] = {n: seconds_per_step(calculator, atoms, args.steps) for n, atoms in cells.items()}

    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    for name, by_size in timings.items():
        print(name + ": " + ", ".join(f"{n} atoms {seconds * 1e3:.2f} ms/step" for n, seconds in by_size.items()))
    fast = next(name for name in timings if name.startswith("ace_fast"))
    balanced = next(name for name in timings if name.startswith("ace_balanced"))
    for name in (fast, balanced):
        ratios = {n: timings["mace_float32"][n] / timings[name][n] for n in cells}
        print(f"{name}: MACE float32 / ACE = " + ", ".join(f"{r:.1f}x ({n} atoms)" for n, r in ratios.items()))
    speed = min(timings["mace_float32"][n] / timings[fast][n] for n in cells)
    print(f"ace_over_mace_speed={speed:.1f}")


if __name__ == "__main__":
    main()
