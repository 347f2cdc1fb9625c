"""The in-process baselines the AiiDA benchmarks are measured against: no AiiDA, the same work.

Both sides of a benchmark run alternately, ``--repeats`` times each, and the ratios use the best wall of each side:
on a shared machine another job's load only ever adds time, and alternating spreads it over both sides.

* ``batched_committee``: the committee script that a ``MaceCalculation`` runs (``executables/mace_committee.py``),
  imported as a module and its ``run(args)`` called in this process, with the job's default parameters (batch_size
  16, max_batch_atoms 512, float64, the same screening). The structures file is written beforehand, off the clock
  (a user with the structures in memory would not write it); imports happen before any clock starts.
* ``direct_pw``: pw.x run directly (a subprocess, no AiiDA) on the very inputs of finished ``PwCalculation`` nodes
  (their ``aiida.in`` and pseudopotentials), a fixed number at a time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "aiida_pyacemaker" / "executables" / "mace_committee.py"
TINY_SI = ROOT / "models" / "tiny-si"


def walls(values: list[float]) -> str:
    """``best`` of repeated walls, with all of them: the ratios use the best of each side (load only adds time)."""
    return f"{min(values):.2f} (best of {', '.join(f'{value:.2f}' for value in values)})"


def model_paths() -> list[str]:
    """The tiny Si committee (three models)."""
    return sorted(str(path) for path in TINY_SI.glob("mace_si_tiny_s*.model"))


#: What the committee script imports while it runs (torch; mace and e3nn when the models are unpickled; matscipy for
#: the neighbours), imported before any clock starts. Not e3nn on its own: mace sets what it needs under torch >= 2.6.
COMMITTEE_IMPORTS = (
    "torch",
    "mace.data",
    "mace.modules",
    "mace.tools",
    "mace.tools.torch_geometric",
    "ase.io.extxyz",
    "matscipy.neighbours",
    "multiprocessing.popen_fork",
)


def committee_script() -> ModuleType:
    """The standalone committee script, imported from its path, with everything it imports while it runs."""
    for name in COMMITTEE_IMPORTS:
        with contextlib.suppress(ImportError):  # matscipy is optional: the script falls back to ASE
            importlib.import_module(name)
    if "mace_committee_script" in sys.modules:
        return sys.modules["mace_committee_script"]
    spec = importlib.util.spec_from_file_location("mace_committee_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_structures(atoms_list: list, path: pathlib.Path) -> None:
    """The structures file as ``MaceCalculation`` writes it: geometry only (no info, no masses)."""
    from ase.io import write

    copies = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.info = {}
        atoms.arrays = {name: atoms.arrays[name] for name in ("numbers", "positions")}
        copies.append(atoms)
    write(path, copies, format="extxyz")


def batched_committee(models: list[str], atoms_list: list, workdir: pathlib.Path) -> tuple[float, dict[str, Any]]:
    """(wall seconds, results) of the committee script's ``run`` in this process, with ``MaceCalculation``'s default
    parameters; the clock covers ``run`` only (reading the file, loading the models, screening, batches)."""
    from aiida_pyacemaker.calculations.mace import DEFAULT_PARAMETERS

    script = committee_script()
    structures_file = workdir / "structures.xyz"
    write_structures(atoms_list, structures_file)
    argv = ["--structures", str(structures_file), "--models", *models]
    argv += [f"--{key.replace('_', '-')}={value}" for key, value in sorted(DEFAULT_PARAMETERS.items())]
    args = script.parse_args(argv)
    start = time.perf_counter()
    results = script.run(args)
    return time.perf_counter() - start, results


def same_results(inprocess: dict[str, Any], node) -> float:
    """Largest |difference| of the uncertainties of the in-process run and a ``MaceResultsData`` (same rows):
    both sides must have computed the same thing."""
    ours = np.asarray(inprocess["uncertainty"], dtype=float)
    theirs = node.get_array("uncertainty")
    finite = np.isfinite(ours)
    if not np.array_equal(finite, np.isfinite(theirs)):
        raise AssertionError("the in-process run and the job flag different structures")
    return float(np.abs(ours[finite] - theirs[finite]).max()) if finite.any() else 0.0


def copy_pw_inputs(calculation, folder: pathlib.Path) -> list[str]:
    """Lay out a finished ``PwCalculation``'s ``aiida.in`` and pseudopotentials in ``folder`` as in its working
    directory; return its command-line arguments (from its ``.aiida/calcinfo.json``)."""
    repository = calculation.base.repository
    folder.mkdir(parents=True)
    (folder / "aiida.in").write_text(repository.get_object_content("aiida.in", mode="r"))
    (folder / "pseudo").mkdir()
    (folder / "out").mkdir()
    for pseudo in calculation.inputs.pseudos.values():
        (folder / "pseudo" / pseudo.filename).write_bytes(pseudo.get_content(mode="rb"))
    (code_info,) = json.loads(repository.get_object_content(".aiida/calcinfo.json", mode="r"))["codes_info"]
    assert code_info.get("stdin_name") is None, code_info
    return [str(argument) for argument in code_info["cmdline_params"]]


def total_energy_ry(output: pathlib.Path) -> float:
    """The last ``!    total energy`` of a pw.x output (Ry)."""
    lines = [line for line in output.read_text().splitlines() if line.lstrip().startswith("!")]
    if not lines:
        raise AssertionError(f"{output}: pw.x printed no total energy")
    return float(lines[-1].split("=")[1].split()[0])


def direct_pw(executable: str, runs: list[tuple[pathlib.Path, list[str]]], concurrency: int) -> float:
    """Wall seconds of ``executable <arguments> > aiida.out`` in every (folder, arguments), ``concurrency`` at a time
    (a pool: the next run starts as soon as one ends)."""

    def one(run: tuple[pathlib.Path, list[str]]) -> None:
        folder, arguments = run
        with open(folder / "aiida.out", "w") as stdout:
            subprocess.run([executable, *arguments], cwd=folder, stdout=stdout, stderr=subprocess.STDOUT, check=True)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, runs))
    return time.perf_counter() - start
