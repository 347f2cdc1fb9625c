"""``MaceCalculation``: a MACE committee evaluates many structures in one job, with an uncertainty each.

The job runs the standalone script ``executables/mace_committee.py`` (no AiiDA import) with the code's Python,
which needs only mace-torch and ase: it works on a remote computer that does not have this plugin.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJob

from ..data.committee_results import MaceResultsData
from ..data.mace_model import MaceModelData
from ..data.structure_set import StructureSetData
from .common import check_parameters, copy_executable, set_serial_defaults

SCRIPT = "mace_committee.py"
STRUCTURES_FILE = "structures.xyz"
REFERENCE_FILE = "reference.xyz"
RESULTS_FILE = "results.npz"
ERROR_FILE = "error.json"
STDOUT_FILE = "aiida.out"

UNCERTAINTY_KINDS = ("auto", "committee", "latent")
#: Allowed ``parameters`` keys: (type, check, description of the allowed values).
PARAMETERS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "device": (str, lambda v: v in ("cpu", "cuda") or v.startswith("cuda:"), "cpu, cuda or cuda:N"),
    "dtype": (str, lambda v: v in ("float32", "float64"), "float32 or float64"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "max_batch_atoms": (int, lambda v: v >= 1, "an integer >= 1"),
    "min_distance": ((int, float), lambda v: v >= 0, "a distance >= 0 (A)"),
    "isolation_distance": ((int, float), lambda v: v >= 0, "a distance >= 0 (A); 0 means the models' r_max"),
    "threads": (int, lambda v: v >= 0, "an integer >= 0 (0: torch's default)"),
    "screen_timeout": ((int, float), lambda v: v > 0, "seconds > 0 of screening per structure (then: timeout)"),
    "uncertainty": (
        str,
        lambda v: v in UNCERTAINTY_KINDS,
        "auto (committee spread with two or more models, else latent distance), committee or latent",
    ),
    "length_scale": (
        (int, float),
        lambda v: v > 0,
        "a length > 0 (A) turning energy/atom and stress spreads into eV/A",
    ),
}
DEFAULT_PARAMETERS: dict[str, Any] = {
    "device": "cpu",
    "dtype": "float64",
    "batch_size": 16,
    "max_batch_atoms": 512,
    "min_distance": 0.5,
    "isolation_distance": 0.0,
    "threads": 0,
    "screen_timeout": 60.0,
    "uncertainty": "auto",
    "length_scale": 5.0,
}


def validate_parameters(value: orm.Dict | None, _) -> str | None:
    """Every key known, every value of the right type and range."""
    return None if value is None else check_parameters(value.get_dict(), PARAMETERS)


def validate_models(value: dict, _) -> str | None:
    """At least one model; all models of a committee share r_max."""
    if not value:
        return "models: give at least one MaceModelData"
    radii = {float(model.r_max) for model in value.values()}
    if len(radii) > 1:
        return f"models: a committee must share r_max, got {sorted(radii)}"
    return None


def uncertainty_kind(models: int, parameters: orm.Dict | None) -> str:
    """The uncertainty a job computes: ``committee`` or ``latent`` (``auto`` resolved by the number of models)."""
    kind = (parameters.get_dict() if parameters is not None else {}).get("uncertainty", "auto")
    if kind == "auto":
        return "committee" if models > 1 else "latent"
    return kind


def validate_uncertainty(inputs: dict[str, Any]) -> str | None:
    """A committee spread needs two models; a latent distance needs reference structures."""
    kind = uncertainty_kind(len(inputs.get("models", {})), inputs.get("parameters"))
    if kind == "committee" and len(inputs.get("models", {})) < 2:
        return "parameters.uncertainty = committee needs two or more models (a single model: `latent`)"
    if kind == "latent" and "reference_structures" not in inputs:
        return (
            "a single model (or parameters.uncertainty = latent) needs `reference_structures`: its uncertainty is the "
            "latent distance to them"
        )
    return None


def validate_inputs(inputs: dict[str, Any], ctx) -> str | None:
    """Exactly one of ``structures`` (a few nodes) and ``structure_set`` (many structures in one node); an
    uncertainty that the models and reference can give."""
    if "models" in ctx and (message := validate_uncertainty(inputs)):
        return message
    if any(name not in ctx for name in ("structures", "structure_set")):
        return None  # exposed by a work chain that supplies the structures itself
    given = [name for name in ("structures", "structure_set") if inputs.get(name) not in (None, {})]
    if len(given) != 1:
        return "give the structures either as `structures` (StructureData nodes) or as one `structure_set`"
    return None


def geometry_only(atoms_list: list) -> list:
    """The structures without masses, info or labels (positions, numbers, cell, pbc)."""
    for atoms in atoms_list:
        atoms.calc = None
        atoms.info = {}
        atoms.arrays = {name: atoms.arrays[name] for name in ("numbers", "positions")}
    return atoms_list


class MaceCalculation(CalcJob):
    """Evaluate N structures with a committee of >= 1 MACE models: energy, forces, stress, uncertainty, status."""

    CACHE_VERSION = 1

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace(
            "models", valid_type=MaceModelData, dynamic=True, validator=validate_models, help="The committee."
        )
        spec.input_namespace(
            "structures",
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help="A few structures as nodes; the link label keys the results. Each link costs O(N): for many "
            "structures use `structure_set`.",
        )
        spec.input(
            "structure_set",
            valid_type=StructureSetData,
            required=False,
            help="Many structures in one node; results rows follow its rows.",
        )
        spec.input(
            "reference_structures",
            valid_type=StructureSetData,
            required=False,
            help="Structures whose atoms span the known domain: the latent-distance uncertainty is measured to them "
            "(e.g. the prototypes and the campaign's DFT structures). Needed for a single model.",
        )
        spec.inputs.validator = validate_inputs
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            required=False,
            validator=validate_parameters,
            help=f"Evaluation settings; defaults: {DEFAULT_PARAMETERS}.",
        )
        set_serial_defaults(spec, "pyacemaker.mace")
        spec.output("results", valid_type=MaceResultsData, help="One row per input structure.")
        spec.exit_code(300, "ERROR_OUTPUT_MISSING", message="The committee script wrote no results file.")
        spec.exit_code(301, "ERROR_OUTPUT_CORRUPT", message="The results file is unreadable or incomplete.")
        spec.exit_code(310, "ERROR_MODEL_UNREADABLE", message="A model file could not be loaded: {message}")
        spec.exit_code(311, "ERROR_INPUT_UNREADABLE", message="The structures file could not be read: {message}")
        spec.exit_code(
            400,
            "ERROR_OUT_OF_WALLTIME",
            message="The job hit its walltime (scheduler's verdict) before the committee finished.",
        )
        spec.exit_code(
            410,
            "ERROR_OUT_OF_MEMORY",
            message="The job ran out of memory or was killed by a signal: {message}",
        )

    @staticmethod
    def row_keys(inputs) -> tuple[list[str], list[str]]:
        """(keys, structure uuids) in the order of the result rows: link labels sorted, or the set's rows."""
        if "structure_set" in inputs:
            uuids = [str(uuid) for uuid in inputs.structure_set.get_array("structure_uuids")]
            return [str(index) for index in range(len(uuids))], uuids
        ordered = sorted(inputs.structures.items())
        return [label for label, _ in ordered], [node.uuid for _, node in ordered]

    def input_atoms(self) -> list:
        if "structure_set" in self.inputs:
            return self.inputs.structure_set.to_atoms()
        return [node.get_ase() for _, node in sorted(self.inputs.structures.items())]

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        from ase.io import write

        parameters = {
            **DEFAULT_PARAMETERS,
            **(self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}),
        }
        atoms_list = geometry_only(self.input_atoms())  # both input forms write the same file
        with folder.open(STRUCTURES_FILE, "w") as handle:
            write(handle, atoms_list, format="extxyz")
        reference = []
        if "reference_structures" in self.inputs:
            with folder.open(REFERENCE_FILE, "w") as handle:
                write(handle, geometry_only(self.inputs.reference_structures.to_atoms()), format="extxyz")
            reference = ["--reference", REFERENCE_FILE]
        copy_executable(folder, SCRIPT)

        local_copy_list = []
        model_paths = []
        for key, model in sorted(self.inputs.models.items()):
            target = f"model_{key}.model"
            local_copy_list.append((model.uuid, model.filename, target))
            model_paths.append(target)

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [
            SCRIPT,
            "--structures",
            STRUCTURES_FILE,
            "--models",
            *model_paths,
            "--output",
            RESULTS_FILE,
            *reference,
            *(f"--{key.replace('_', '-')}={value}" for key, value in sorted(parameters.items())),
        ]
        codeinfo.stdout_name = STDOUT_FILE

        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = local_copy_list
        calcinfo.retrieve_list = [RESULTS_FILE, ERROR_FILE, STDOUT_FILE]
        return calcinfo
