"""The codes that the plugin runs, registered as ``InstalledCode`` on a computer."""

from __future__ import annotations

import pathlib
import shutil
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .quantum_espresso import SetupError
from .result import StepResult

if TYPE_CHECKING:
    from aiida.orm import Computer


@dataclass(frozen=True)
class CodeSpec:
    """One code the plugin needs: its label, the executable to find on PATH and the default CalcJob plugin."""

    label: str
    executable: str
    calc_job_plugin: str
    description: str
    with_mpi: bool = False


PW_CODE = CodeSpec("pw", "pw.x", "quantumespresso.pw", "Quantum ESPRESSO pw.x (serial)")
#: The Python that has mace-torch: MaceCalculation runs its standalone committee script with it.
MACE_CODE = CodeSpec("mace", sys.executable, "pyacemaker.mace", "Python with mace-torch (MACE committee script)")
MACE_TRAIN_CODE = CodeSpec("mace-train", "mace_run_train", "pyacemaker.mace.train", "mace-torch's mace_run_train")
#: The Python that has python-ace (pacemaker, pace_yaml2yace, pace_activeset on its PATH): runs the fit driver.
PACEMAKER_CODE = CodeSpec("pacemaker", sys.executable, "pyacemaker.pacemaker", "Python with python-ace (pacemaker)")

#: The Python that has python-ace: MD with gamma (exploration, MD stability).
ACE_MD_CODE = CodeSpec("ace-md", sys.executable, "pyacemaker.ace.md", "Python with python-ace (MD with gamma)")
#: The Python that has python-ace and mace-torch: labels and ionic relaxations for the validation.
EVALUATE_CODE = CodeSpec("evaluate", sys.executable, "pyacemaker.evaluate", "Python with python-ace and mace-torch")

#: Codes registered by ``aiida-pyacemaker setup``. MPI is off by default: on a laptop two ranks are not faster,
#: and ``mpirun`` refuses to run as root without extra flags. Register an MPI code yourself for HPC runs.
PLUGIN_CODES: tuple[CodeSpec, ...] = (PW_CODE, MACE_CODE, MACE_TRAIN_CODE, PACEMAKER_CODE, ACE_MD_CODE, EVALUATE_CODE)


def find_executable(name: str) -> str | None:
    """``name`` installed beside this Python (the plugin's virtual environment, activated or not), else on PATH."""
    sibling = pathlib.Path(sys.executable).parent / name
    if not pathlib.Path(name).is_absolute() and sibling.is_file():
        return str(sibling)
    return shutil.which(name)


def ensure_code(spec: CodeSpec, computer: Computer) -> StepResult:
    """Register ``spec`` on ``computer`` unless a code with that label already exists there."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    full_label = f"{spec.label}@{computer.label}"
    try:
        code = orm.load_code(full_label)
        return StepResult(f"code {full_label}", False, f"pk {code.pk}: {code.get_executable()}")
    except NotExistent:
        pass
    executable = find_executable(spec.executable)
    if executable is None:
        raise SetupError(f"cannot register code `{full_label}`: `{spec.executable}` is not on PATH.")
    code = orm.InstalledCode(
        label=spec.label,
        computer=computer,
        filepath_executable=executable,
        default_calc_job_plugin=spec.calc_job_plugin,
        description=spec.description,
        with_mpi=spec.with_mpi,
    )
    code.store()
    return StepResult(f"code {full_label}", True, f"pk {code.pk}: {executable}")
