"""Main job (Foundation stage): a real PwBaseWorkChain on a 2-atom Si cell, run by the daemon.

Usage: python examples/run_si_pw.py [--profile pyacemaker]
Needs `aiida-pyacemaker setup` first (profile, pw@localhost, pseudo family, daemon).
"""

from __future__ import annotations

import argparse

from aiida import load_profile, orm
from ase.build import bulk

from aiida_pyacemaker.cli.launch import submit_and_wait
from aiida_pyacemaker.dft import get_pw_builder, pw_label
from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="pyacemaker")
    parser.add_argument("--code", default="pw@localhost")
    parser.add_argument("--stringency", default="normal", choices=["normal", "low"])
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    load_profile(args.profile, allow_switch=True)
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.positions[1] += [0.08, -0.04, 0.03]  # off the ideal site, so that the forces are not zero
    structure = orm.StructureData(ase=atoms)

    builder = get_pw_builder(orm.load_code(args.code), structure, DEFAULT_FAMILY, stringency=args.stringency)
    node = submit_and_wait(builder, timeout=args.timeout)
    if not node.is_finished_ok:
        raise SystemExit(f"PwBaseWorkChain<{node.pk}> failed: exit status {node.exit_status} {node.exit_message}")

    label = pw_label(node)
    print(f"PwBaseWorkChain<{node.pk}> finished on profile `{args.profile}` (inspect: verdi process show {node.pk})")
    print(f"energy = {label['energy']:.6f} eV")
    for index, force in enumerate(label["forces"]):
        print(f"force[{index}] = {force[0]: .6f} {force[1]: .6f} {force[2]: .6f} eV/A")
    print("stress diagonal = " + " ".join(f"{value: .6f}" for value in label["stress"].diagonal()) + " eV/A^3")


if __name__ == "__main__":
    main()
