#!/usr/bin/env python
"""Energy, forces and stress of structures with an ACE or MACE potential, relaxing the ions where asked.

Standalone (python-ace or mace-torch, ase, numpy): it imports nothing from the plugin. A structure whose ``info``
has ``relax=True`` is relaxed at fixed cell (BFGS to ``--fmax`` eV/A, at most ``--max-steps`` steps) before its
energy, forces and stress are taken. Energies are in the potential's own zero (ACE without pacemaker's reference
energies, MACE as the model gives them): every property computed from them is a difference at fixed composition.

Writes ``results.xyz`` (the final geometries with ``ml_energy``, ``ml_stress`` (Voigt, eV/A^3, ASE's sign),
``ml_forces``, ``relax_steps`` and ``relax_converged``), or ``error.json`` on a fatal error (``potential_unreadable``,
``input_unreadable``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def fail(kind: str, message: str) -> None:
    with open("error.json", "w") as handle:
        json.dump({"error": kind, "message": message[:2000]}, handle)
    print(f"{kind}: {message}", file=sys.stderr)
    sys.exit(2)


def load_calculator(engine: str, path: str, device: str, dtype: str):
    if engine == "ace":
        from pyace import PyACECalculator

        return PyACECalculator(path)
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=path, device=device, default_dtype=dtype)


def relax_ions(atoms, fmax: float, max_steps: int) -> tuple[int, bool]:
    from ase.optimize import BFGS

    optimizer = BFGS(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
    return int(optimizer.nsteps), converged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("ace", "mace"), required=True)
    parser.add_argument("--potential", required=True, help="ACE B-basis .yaml or MACE .model")
    parser.add_argument("--structures", required=True, help="extxyz; info relax=True relaxes the ions first")
    parser.add_argument("--fmax", type=float, default=0.005)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    from ase.io import read, write

    try:
        structures = read(args.structures, index=":")
    except Exception as exception:  # any reader error is the input's fault
        fail("input_unreadable", f"{args.structures}: {exception}")
    try:
        calculator = load_calculator(args.engine, args.potential, args.device, args.dtype)
    except Exception as exception:
        fail("potential_unreadable", f"{args.potential}: {exception}")

    results = []
    for index, atoms in enumerate(structures):
        atoms.calc = calculator
        steps, converged = 0, True
        if atoms.info.get("relax", False):
            steps, converged = relax_ions(atoms, args.fmax, args.max_steps)
        frame = atoms.copy()
        frame.calc = None
        frame.info.update(
            ml_energy=float(atoms.get_potential_energy()),
            ml_stress=np.asarray(atoms.get_stress(voigt=True), dtype=float),
            relax_steps=steps,
            relax_converged=converged,
        )
        frame.arrays["ml_forces"] = np.asarray(atoms.get_forces(), dtype=float)
        results.append(frame)
        print(f"structure {index}: E = {frame.info['ml_energy']:.6f} eV, relax steps {steps}", flush=True)
    write("results.xyz", results, format="extxyz")


if __name__ == "__main__":
    main()
