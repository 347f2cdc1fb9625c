"""``EvaluateCalculation``: energy, forces and stress of structures with an ACE or MACE potential, relaxing the
ions of the rows that ask for it (array ``relax`` of the structure set).

Phase 2 uses it for the ACE potential and the teacher on the same validation structures as DFT. The job runs the
standalone script ``executables/evaluate_structures.py`` with the code's Python (python-ace or mace-torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJob

from ..data.ace_potential import YAML_NAME, AcePotentialData
from ..data.labelled_structures import LabelledStructuresData
from ..data.mace_model import MaceModelData
from ..data.structure_set import StructureSetData
from .common import (
    ParameterTable,
    add_potential_script_exit_codes,
    check_parameters,
    copy_executable,
    set_serial_defaults,
)
from .mace import geometry_only

SCRIPT = "evaluate_structures.py"
STRUCTURES_FILE = "structures.xyz"
RESULTS_FILE = "results.xyz"
STDOUT_FILE = "aiida.out"
MACE_FILE = "model.model"

PARAMETERS: ParameterTable = {
    "fmax": ((int, float), lambda v: v > 0, "a force > 0 (eV/A) at which an ionic relaxation has converged"),
    "max_steps": (int, lambda v: v >= 1, "an integer >= 1 (BFGS steps per relaxation)"),
    "device": (str, lambda v: v in ("cpu", "cuda") or v.startswith("cuda:"), "cpu, cuda or cuda:N"),
    "dtype": (str, lambda v: v in ("float32", "float64"), "float32 or float64"),
}
DEFAULT_PARAMETERS: dict[str, Any] = {"fmax": 0.005, "max_steps": 300, "device": "cpu", "dtype": "float64"}


def validate_parameters(value: orm.Dict | None, _) -> str | None:
    return None if value is None else check_parameters(value.get_dict(), PARAMETERS)


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    """The potential knows every element of the structures."""
    potential, structures = inputs.get("potential"), inputs.get("structure_set")
    if potential is None or structures is None:
        return None
    if missing := sorted(set(structures.elements) - set(potential.elements)):
        return f"the structures contain {missing}, which potential<{potential.pk}> does not know"
    return None


def relax_flags(structures: StructureSetData) -> np.ndarray:
    """Per row: relax the ions first (the set's ``relax`` array; none when it has no such array)."""
    if "relax" in structures.get_arraynames():
        return structures.get_array("relax").astype(bool)
    return np.zeros(len(structures), dtype=bool)


class EvaluateCalculation(CalcJob):
    """Label structures with an ACE potential or one MACE model, relaxing the ions of the flagged rows."""

    CACHE_VERSION = 1

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input(
            "potential",
            valid_type=(AcePotentialData, MaceModelData),
            help="An ACE potential (python-ace) or one MACE model (mace-torch).",
        )
        spec.input(
            "structure_set",
            valid_type=StructureSetData,
            help="The structures; rows whose array `relax` is true are relaxed at fixed cell first.",
        )
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            required=False,
            validator=validate_parameters,
            help=f"Settings; defaults: {DEFAULT_PARAMETERS}.",
        )
        spec.inputs.validator = validate_inputs
        set_serial_defaults(spec, "pyacemaker.evaluate")
        spec.output(
            "labelled",
            valid_type=LabelledStructuresData,
            help="The final geometries and their labels, with arrays relax_steps and relax_converged.",
        )
        add_potential_script_exit_codes(spec, "results file")

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        from ase.io import write

        parameters = {
            **DEFAULT_PARAMETERS,
            **(self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}),
        }
        atoms_list = geometry_only(self.inputs.structure_set.to_atoms())
        for atoms, relax in zip(atoms_list, relax_flags(self.inputs.structure_set), strict=True):
            atoms.info["relax"] = bool(relax)
        with folder.open(STRUCTURES_FILE, "w") as handle:
            write(handle, atoms_list, format="extxyz")
        copy_executable(folder, SCRIPT)
        potential = self.inputs.potential
        if isinstance(potential, AcePotentialData):
            engine, target, local_copy = "ace", YAML_NAME, (potential.uuid, YAML_NAME, YAML_NAME)
        else:
            engine, target, local_copy = "mace", MACE_FILE, (potential.uuid, potential.filename, MACE_FILE)

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [
            SCRIPT,
            "--engine",
            engine,
            "--potential",
            target,
            "--structures",
            STRUCTURES_FILE,
            *(f"--{key.replace('_', '-')}={value}" for key, value in sorted(parameters.items())),
        ]
        codeinfo.stdout_name = STDOUT_FILE
        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = [local_copy]
        calcinfo.retrieve_list = [RESULTS_FILE, "error.json", STDOUT_FILE]
        return calcinfo
