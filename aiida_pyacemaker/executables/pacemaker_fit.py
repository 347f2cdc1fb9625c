#!/usr/bin/env python
"""Run one pacemaker fit from portable inputs; standalone (no AiiDA import), needs python-ace and pandas.

Inputs in the working directory: ``input.yaml`` (written by PacemakerCalculation, ``data.filename`` and
``data.test_filename`` pointing at ``*.pckl.gzip`` files this script creates), ``train.xyz`` and optionally
``test.xyz`` (extended XYZ, labels under ``REF_energy``/``REF_forces``, row weight under ``w_factor``), and
optionally ``previous.yaml`` (the potential to continue from).

Steps: 1. convert the XYZ files into pacemaker's gzipped pandas pickle with *this* environment's pandas (so a
remote pacemaker with another pandas major version reads its own pickle); 2. strip ``_fit_cycles`` from the
start potential's metadata (an interim potential with it would silently fit nothing); 3. ``pacemaker
input.yaml``; 4. when pacemaker added its ZBL inner core (``fit.repulsion: auto``, after the fit), move the zone
where ACE is blended into ZBL below the data: pacemaker puts ``r_in`` at the shortest distance of each bond in the
data and blends over ``delta_in`` = 0.1 A below it. ZBL is several eV above ACE there, so a pair a little shorter
than any in the data meets a wall of tens of eV/A (measured on the held-out Si set: one cell with a pair 0.14 A
below ``r_in`` had a force RMSE of 1.2 eV/A, ACE alone 0.77; a held-out Cu cell 0.05 A below it had 293 eV/A).
The driver sets ``r_in`` to the data minimum minus ``--zbl-inner-margin`` (0.2 A: ACE alone extrapolates that far)
and ``delta_in`` to ``--zbl-blend-width`` (0.3 A): pure ZBL from 0.5 A below the shortest pair of the data;
same held-out Si set: force RMSE 322 -> 215 meV/A. 0 and 0.1 keep pacemaker's choice.
5. ``pace_yaml2yace``; 6. ``pace_activeset`` when ``--active-set`` is given.

Fatal problems write ``error.json`` ({"error": kind, "message": ...}) and exit non-zero:
exit 3 ``data_unreadable``, exit 4 ``fit_failed``, exit 5 ``conversion_failed``, exit 128 + signal number
``fit_interrupted`` (SIGTERM/SIGINT to this script, e.g. a scheduler's walltime, stops pacemaker with SIGINT; or
pacemaker itself was killed by a signal). pacemaker saves ``interim_potential_*.yaml`` while it fits, so an
interrupted fit can be continued from the newest one.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import subprocess
import sys

EXIT_DATA_UNREADABLE = 3
EXIT_FIT_FAILED = 4
EXIT_CONVERSION_FAILED = 5
POTENTIAL = "output_potential.yaml"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_SECONDS = 20

#: The running python-ace command, to pass a termination signal on to it.
_CHILD: list[subprocess.Popen] = []


def fail(kind: str, message: str, code: int) -> None:
    pathlib.Path("error.json").write_text(json.dumps({"error": kind, "message": message[-4000:]}))
    print(f"{kind}: {message[-4000:]}", file=sys.stderr)
    sys.exit(code)


def xyz_to_pickle(source: str, target: str) -> int:
    """Write pacemaker's DataFrame (ase_atoms, energy, forces, w_factor) as a gzipped pickle; return its rows."""
    import numpy as np
    import pandas as pd
    from ase.io import read

    try:
        structures = read(source, index=":", format="extxyz")
    except Exception as exception:
        fail("data_unreadable", f"{source}: {type(exception).__name__}: {exception}", EXIT_DATA_UNREADABLE)
    rows = []
    for index, atoms in enumerate(structures):
        energy = float(atoms.info.pop("REF_energy"))
        forces = np.asarray(atoms.arrays.pop("REF_forces"), dtype=float)
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            fail("data_unreadable", f"{source}: structure {index} has a non-finite label", EXIT_DATA_UNREADABLE)
        weight = float(atoms.info.pop("w_factor", 1.0))
        atoms.info = {}
        rows.append({"ase_atoms": atoms, "energy": energy, "forces": forces, "w_factor": weight})
    pd.DataFrame(rows).to_pickle(target, compression="gzip")
    return len(rows)


def strip_fit_cycles(path: str) -> bool:
    """Remove ``_fit_cycles`` from a potential's metadata; return whether it was there."""
    from pyace import BBasisConfiguration

    basis = BBasisConfiguration(path)
    metadata = basis.metadata
    if "_fit_cycles" not in metadata:
        return False
    del metadata["_fit_cycles"]
    basis.metadata = metadata
    basis.save(path)
    return True


def move_zbl_blend(path: str, margin: float, width: float) -> list[list[float]]:
    """Every ZBL block: ``r_in`` lowered by ``margin``, ``delta_in`` set to ``width`` (see the module docstring);
    return [r_in, delta_in] per block."""
    from pyace import BBasisConfiguration

    configuration = BBasisConfiguration(path)
    blocks = configuration.funcspecs_blocks
    changed = []
    for block in blocks:
        if block.inner_cutoff_type == "zbl":
            block.r_in = block.r_in - margin
            block.delta_in = width
            changed.append([round(float(block.r_in), 4), width])
    configuration.funcspecs_blocks = blocks
    configuration.save(path)
    return changed


def repulsion_added(input_file: str = "input.yaml") -> bool:
    import yaml

    content = yaml.safe_load(pathlib.Path(input_file).read_text())
    return (content.get("fit") or {}).get("repulsion") == "auto"


def tool(name: str) -> str:
    """A python-ace command: the one installed beside this Python, else whatever PATH finds."""
    sibling = pathlib.Path(sys.executable).parent / name
    return str(sibling) if sibling.is_file() else name


def on_signal(signum: int, _frame) -> None:
    """Stop the running command gently, then record the interruption and exit.

    pacemaker gets SIGINT, not the signal itself: Python turns it into KeyboardInterrupt only between C calls, so
    an interim potential being saved is written to the end (a SIGTERM there leaves an empty file). After
    ``GRACE_SECONDS`` it is killed.
    """
    for child in _CHILD:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
    name = signal.Signals(signum).name
    fail("fit_interrupted", f"stopped by {name} before the fit finished", 128 + signum)


def run(command: list[str], kind: str, code: int) -> None:
    """Run a python-ace command, its output into ``<command>.log``; a failure (or a kill) ends this script."""
    log = pathlib.Path(f"{pathlib.Path(command[0]).name}.log")
    with log.open("w") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, text=True)
        _CHILD[:] = [child]
        returncode = child.wait()
        _CHILD.clear()
    if returncode < 0:
        name = signal.Signals(-returncode).name
        fail("fit_interrupted", f"{' '.join(command)} was killed by {name}", 128 - returncode)
    if returncode != 0:
        fail(kind, f"{' '.join(command)} exited {returncode}:\n{log.read_text()[-4000:]}", code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pacemaker fit from portable inputs")
    parser.add_argument("--train", default="train.xyz")
    parser.add_argument("--test", default="")
    parser.add_argument("--previous", default="", help="potential to continue from (YAML B-basis)")
    parser.add_argument("--active-set", action="store_true", help="build output_potential.asi")
    parser.add_argument("--zbl-inner-margin", type=float, default=0.2, help="A of ACE below the data's shortest pair")
    parser.add_argument("--zbl-blend-width", type=float, default=0.3, help="A over which ACE is blended into ZBL")
    args = parser.parse_args(argv)
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, on_signal)

    summary: dict = {"train_rows": xyz_to_pickle(args.train, "train.pckl.gzip")}
    if args.test:
        summary["test_rows"] = xyz_to_pickle(args.test, "test.pckl.gzip")
    if args.previous:
        summary["stripped_fit_cycles"] = strip_fit_cycles(args.previous)
    run([tool("pacemaker"), "input.yaml"], "fit_failed", EXIT_FIT_FAILED)
    if not pathlib.Path(POTENTIAL).is_file():
        fail("fit_failed", f"pacemaker finished without writing {POTENTIAL}", EXIT_FIT_FAILED)
    if repulsion_added():
        summary["zbl_r_in_delta_in"] = move_zbl_blend(POTENTIAL, args.zbl_inner_margin, args.zbl_blend_width)
    run([tool("pace_yaml2yace"), POTENTIAL, "-o", "output_potential.yace"], "conversion_failed", EXIT_CONVERSION_FAILED)
    if args.active_set:
        run([tool("pace_activeset"), POTENTIAL, "-d", "train.pckl.gzip"], "conversion_failed", EXIT_CONVERSION_FAILED)
    pathlib.Path("driver_summary.json").write_text(json.dumps(summary))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
