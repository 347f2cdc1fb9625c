"""The committee script on CUDA versus CPU: same structures, same tiny models, same script the CalcJob runs.

Runs ``executables/mace_committee.py`` as a subprocess (exactly as a MaceCalculation job does) with
``--device cpu`` and ``--device cuda`` (float64, and float32 on CUDA), then compares energies, forces and
uncertainties. Needs a CUDA build of torch; on a machine without a GPU it says so and exits 0.
Last line: ``cuda_max_energy_diff_ev=<max |E_cuda - E_cpu|> cuda_over_cpu_speed=<cpu s / cuda s>``.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "aiida_pyacemaker" / "executables" / "mace_committee.py"
MODELS = sorted(str(path) for path in (ROOT / "models" / "tiny-si").glob("mace_si_tiny_s*.model"))


def evaluate(folder: pathlib.Path, device: str, dtype: str) -> tuple[dict, float]:
    output = folder / f"{device}-{dtype}.npz"
    command = [sys.executable, str(SCRIPT), "--structures", str(folder / "in.xyz"), "--models", *MODELS]
    command += ["--output", str(output), f"--device={device}", f"--dtype={dtype}", "--batch-size=32"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with np.load(output) as archive:
        return {name: archive[name] for name in archive.files}, wall


def main() -> None:
    import torch
    from ase.build import bulk
    from ase.io import write

    rng = np.random.default_rng(0)
    structures = []
    for index in range(400):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat([(1, 1, 1), (2, 1, 1), (2, 2, 2)][index % 3])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        structures.append(atoms)
    folder = pathlib.Path(tempfile.mkdtemp())
    write(folder / "in.xyz", structures, format="extxyz")
    cpu, cpu_wall = evaluate(folder, "cpu", "float64")
    print(f"cpu float64: {cpu_wall:.1f} s for {len(structures)} structures (process start and model load included)")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare")
        return
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    cuda, cuda_wall = evaluate(folder, "cuda", "float64")
    cuda32, cuda32_wall = evaluate(folder, "cuda", "float32")
    energy_diff = float(np.abs(cuda["energy"] - cpu["energy"]).max())
    force_diff = float(np.abs(cuda["forces"] - cpu["forces"]).max())
    u_diff = float(np.abs(cuda["uncertainty"] - cpu["uncertainty"]).max())
    print(f"cuda float64: {cuda_wall:.1f} s; max |dE| {energy_diff:.2e} eV, |dF| {force_diff:.2e} eV/A")
    print(f"max |du| {u_diff:.2e} eV/A")
    e32 = float(np.abs(cuda32["energy"] - cpu["energy"]).max())
    print(f"cuda float32: {cuda32_wall:.1f} s; max |dE| {e32:.2e} eV vs cpu float64")
    print(f"statuses cpu {sorted(set(cpu['status'].tolist()))} cuda {sorted(set(cuda['status'].tolist()))}")
    print(f"cuda_max_energy_diff_ev={energy_diff:.3e} cuda_over_cpu_speed={cpu_wall / cuda_wall:.2f}")


if __name__ == "__main__":
    main()
