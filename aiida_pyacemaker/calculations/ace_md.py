"""``AceMdCalculation``: molecular dynamics with an ACE potential and its extrapolation grade gamma.

Phase 3 (``mode: explore``): Langevin NVT at a list of temperatures from each start structure; frames where the
potential extrapolates (gamma above ``gamma_select``) are collected, a trajectory stops above ``gamma_stop``, and the
collected frames are reduced by D-optimality (MaxVol) to at most ``max_selected``. Phase 2 (``mode: stability``):
NVT then NVE, to see whether MD stays physical and how much the NVE energy drifts.

The job runs the standalone script ``executables/ace_md.py`` with the code's Python (python-ace and ase only).
"""

from __future__ import annotations

import json
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJob

from ..data.ace_potential import ASI_NAME, YAML_NAME, AcePotentialData
from ..data.structure_set import StructureSetData
from .common import (
    ParameterTable,
    add_potential_script_exit_codes,
    check_parameters,
    copy_executable,
    set_serial_defaults,
)
from .mace import geometry_only

SCRIPT = "ace_md.py"
STRUCTURES_FILE = "start.xyz"
PARAMETERS_FILE = "parameters.json"
SUMMARY_FILE = "summary.json"
TRAJECTORY_FILE = "trajectory.npz"
SELECTED_FILE = "selected.xyz"
STDOUT_FILE = "aiida.out"


def _positive(value: Any) -> bool:
    return value > 0


#: Allowed ``parameters`` keys: (type, check, description of the allowed values).
PARAMETERS: ParameterTable = {
    "mode": (str, lambda v: v in ("explore", "stability"), "explore or stability"),
    "temperatures": (
        list,
        lambda v: bool(v) and all(isinstance(t, int | float) and not isinstance(t, bool) and t > 0 for t in v),
        "a non-empty list of temperatures > 0 (K)",
    ),
    "steps": (int, _positive, "an integer > 0 (NVT steps)"),
    "nve_steps": (int, lambda v: v >= 0, "an integer >= 0 (NVE steps after the NVT part, stability mode)"),
    "timestep_fs": ((int, float), lambda v: 0 < v <= 5, "a time step in (0, 5] fs"),
    "friction_per_fs": ((int, float), _positive, "a Langevin friction > 0 (1/fs)"),
    "gamma_select": ((int, float), _positive, "a gamma > 0 above which frames are collected"),
    "gamma_stop": ((int, float), _positive, "a gamma > 0 at which a trajectory stops"),
    "select_interval": (int, _positive, "an integer > 0: steps between two collected frames"),
    "max_selected": (int, _positive, "an integer > 0: frames kept after the D-optimal reduction"),
    "min_atoms": (int, _positive, "an integer > 0: start cells are repeated to at least this many atoms"),
    "min_distance": ((int, float), _positive, "a distance > 0 (A): a closer pair means the structure collapsed"),
    "max_temperature_factor": ((int, float), lambda v: v > 1, "a factor > 1 of the target temperature"),
    "log_interval": (int, _positive, "an integer > 0: steps between two points of the time series"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
}
DEFAULT_PARAMETERS: dict[str, Any] = {
    "mode": "explore",
    "temperatures": [600.0, 1200.0],
    "steps": 2000,
    "nve_steps": 0,
    "timestep_fs": 1.0,
    "friction_per_fs": 0.01,
    "gamma_select": 2.0,
    "gamma_stop": 10.0,
    "select_interval": 20,
    "max_selected": 10,
    "min_atoms": 64,
    "min_distance": 1.5,
    "max_temperature_factor": 3.0,
    "log_interval": 10,
    "seed": 0,
}


def validate_parameters(value: orm.Dict | None, _) -> str | None:
    """Every key known, every value of the right type and range; ``gamma_select`` below ``gamma_stop``."""
    if value is None:
        return None
    given = value.get_dict()
    if message := check_parameters(given, PARAMETERS):
        return message
    merged = {**DEFAULT_PARAMETERS, **given}
    if merged["gamma_select"] >= merged["gamma_stop"]:
        return f"parameters: gamma_select ({merged['gamma_select']}) must be below gamma_stop ({merged['gamma_stop']})"
    return None


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    """Exploring needs the potential's active set (gamma); a stability run without it reports no gamma."""
    potential = inputs.get("potential")
    mode = inputs["parameters"].get("mode", "explore") if "parameters" in inputs else "explore"
    if potential is not None and mode == "explore" and not potential.has_active_set:
        return (
            f"potential<{potential.pk}> has no active set (.asi): gamma cannot be computed; fit it with "
            "`parameters.active_set: true` (PacemakerCalculation) or run pace_activeset"
        )
    return None


class AceMdCalculation(CalcJob):
    """MD with an ACE potential and gamma: exploration (selected frames) or a stability check (summary)."""

    CACHE_VERSION = 1

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("potential", valid_type=AcePotentialData, help="The ACE potential, with its active set.")
        spec.input("structure_set", valid_type=StructureSetData, help="Start structures (repeated to min_atoms).")
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            required=False,
            validator=validate_parameters,
            help=f"MD settings; defaults: {DEFAULT_PARAMETERS}.",
        )
        spec.inputs.validator = validate_inputs
        set_serial_defaults(spec, "pyacemaker.ace.md")
        spec.output("summary", valid_type=orm.Dict, help="Per trajectory: steps, stop reason, largest gamma, ...")
        spec.output("trajectory", valid_type=orm.ArrayData, help="Time series per trajectory (t<index>_<quantity>).")
        spec.output(
            "selected",
            valid_type=StructureSetData,
            required=False,
            help="Explore: the frames selected for labelling, with arrays gamma, temperature, md_step, trajectory.",
        )
        add_potential_script_exit_codes(spec, "summary")

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        from ase.io import write

        given = self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}
        with folder.open(PARAMETERS_FILE, "w") as handle:
            json.dump({**DEFAULT_PARAMETERS, **given}, handle, indent=1)
        with folder.open(STRUCTURES_FILE, "w") as handle:
            write(handle, geometry_only(self.inputs.structure_set.to_atoms()), format="extxyz")
        copy_executable(folder, SCRIPT)
        potential = self.inputs.potential

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        files = [YAML_NAME, *([ASI_NAME] if potential.has_active_set else [])]
        codeinfo.cmdline_params = [
            SCRIPT,
            "--potential",
            YAML_NAME,
            *(["--active-set", ASI_NAME] if potential.has_active_set else []),
            "--structures",
            STRUCTURES_FILE,
            "--parameters",
            PARAMETERS_FILE,
        ]
        codeinfo.stdout_name = STDOUT_FILE
        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = [(potential.uuid, name, name) for name in files]
        calcinfo.retrieve_list = [SUMMARY_FILE, TRAJECTORY_FILE, SELECTED_FILE, "error.json", STDOUT_FILE]
        return calcinfo
