"""``PacemakerCalculation``: fit an ACE potential with pacemaker, from scratch or continued from a previous one.

The job runs the standalone driver ``executables/pacemaker_fit.py`` with the code's Python (it needs only
python-ace and pandas). Data travel as extended XYZ and the driver writes pacemaker's pandas pickle on the
computer that runs the fit, so the plugin's and the remote's pandas versions never have to match.

Continuing a fit (warm start) is pacemaker's ``potential: previous.yaml``: same basis, coefficients start
from the file, the previous reference energies are kept. The seed's ``initial_potential: previous.yace`` meant
exactly this; a ``.yace`` cannot be refitted, and pacemaker's own ``initial_potential`` key means ladder
fitting (basis growth), available here as the separate ``ladder_initial_potential`` input.
"""

from __future__ import annotations

from typing import Any

import yaml
from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJob

from ..data.ace_potential import AcePotentialData
from ..data.labelled_structures import SOURCES, LabelledStructuresData
from .common import copy_executable, set_serial_defaults

DRIVER = "pacemaker_fit.py"
INPUT_FILE = "input.yaml"
TRAIN_XYZ = "train.xyz"
TEST_XYZ = "test.xyz"
PREVIOUS = "previous.yaml"
LADDER_INITIAL = "initial.yaml"
BACKENDS = ("tensorpot", "pyace")
OPTIMIZERS = ("BFGS", "L-BFGS-B")
#: ``scipy.optimize.minimize`` options pacemaker passes on (``fit.options``); ``maxiter`` is pacemaker's own key.
#: ``c1``/``c2`` are BFGS's Wolfe line-search constants (a larger ``c1`` accepts only shorter, surer steps).
OPTIMIZER_OPTIONS = ("gtol", "c1", "c2", "xrtol", "norm", "maxcor", "ftol", "maxls", "maxfun")
#: pacemaker's defaults for the minimiser (tensorpot backend); kept when ``optimizer_options`` are given.
DEFAULT_OPTIMIZER_OPTIONS = {"gtol": 1e-8, "disp": True}
INTERIM_PATTERN = "interim_potential_*.yaml"


def _valid_optimizer_options(value: Any) -> bool:
    if not isinstance(value, dict) or not set(value) <= set(OPTIMIZER_OPTIONS):
        return False
    if not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value.values()):
        return False
    return 0 < value.get("c1", 1e-4) < value.get("c2", 0.9) < 1


#: Allowed ``parameters`` keys and a check of each value.
PARAMETER_CHECKS: dict[str, tuple[Any, str]] = {
    "cutoff": (lambda v: isinstance(v, (int, float)) and v > 0, "a cutoff > 0 (A)"),
    "number_of_functions_per_element": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "embeddings": (lambda v: isinstance(v, dict), "a pacemaker embeddings mapping"),
    "bonds": (lambda v: isinstance(v, dict), "a pacemaker bonds mapping"),
    "functions": (lambda v: isinstance(v, dict), "a pacemaker functions mapping"),
    "kappa": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a number in [0, 1]"),
    "L1_coeffs": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "L2_coeffs": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}"),
    "maxiter": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "warm_start_maxiter": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "backend": (lambda v: v in BACKENDS, f"one of {BACKENDS}"),
    "batch_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "display_step": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "weighting": (lambda v: isinstance(v, dict), "a pacemaker fit.weighting mapping"),
    "source_weights": (
        lambda v: isinstance(v, dict) and set(v) <= set(SOURCES) and all(w >= 0 for w in v.values()),
        f"a mapping from {SOURCES} to weights >= 0",
    ),
    "active_set": (lambda v: isinstance(v, bool), "true or false"),
    "seed": (lambda v: isinstance(v, int), "an integer"),
    "test_size": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a fraction in [0, 1)"),
    "reference_energy": (lambda v: v == "auto" or isinstance(v, (dict, int, float)), "auto, a number or a mapping"),
    "ladder_step": (lambda v: isinstance(v, (int, list)), "an integer or a list"),
    "ladder_type": (lambda v: v in ("body_order", "power_order"), "body_order or power_order"),
    "min_relative_train_loss_per_iter": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "optimizer_options": (
        _valid_optimizer_options,
        f"a mapping of scipy.optimize.minimize options from {OPTIMIZER_OPTIONS} to numbers, 0 < c1 < c2 < 1",
    ),
    "repulsion": (lambda v: v in ("auto", "none"), "auto (ZBL inner core from the data) or none"),
    "zbl_inner_margin": (
        lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
        "a distance in [0, 1] A below the data's shortest pair where the ACE-to-ZBL blend starts (0: pacemaker's)",
    ),
    "zbl_blend_width": (
        lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
        "a width in (0, 1] A over which ACE is blended into ZBL (0.1: pacemaker's)",
    ),
}


def validate_parameters(value: orm.Dict, _) -> str | None:
    for key, item in value.get_dict().items():
        if key not in PARAMETER_CHECKS:
            return f"parameters: unknown key `{key}`; allowed: {', '.join(sorted(PARAMETER_CHECKS))}"
        check, allowed = PARAMETER_CHECKS[key]
        if isinstance(item, bool) != (key == "active_set") or not check(item):
            return f"parameters.{key} = {item!r} is invalid: expected {allowed}"
    return None


def validate_inputs(inputs: dict[str, Any], ctx) -> str | None:
    """Elements of the data must be in the potential that is continued; one start potential at most."""
    if any(name not in ctx for name in ("training_set", "previous_potential")):
        return None  # exposed by a work chain that supplies these itself (and validates them)
    training = inputs["training_set"]
    if "previous_potential" in inputs and "ladder_initial_potential" in inputs:
        return "give either previous_potential (continue a fit) or ladder_initial_potential (grow a basis)"
    for name in ("previous_potential", "ladder_initial_potential"):
        if name in inputs:
            missing = sorted(set(training.elements) - set(inputs[name].elements))
            if missing:
                return (
                    f"{name} has no basis for {missing}: fit from scratch (omit {name}) to add elements; "
                    f"the potential covers {inputs[name].elements}"
                )
    return None


def fit_iterations(parameters: dict[str, Any], warm_start: bool) -> int:
    """pacemaker's ``maxiter`` for these settings: ``warm_start_maxiter`` when continuing a potential."""
    maxiter = int(parameters.get("maxiter", 200))
    return int(parameters.get("warm_start_maxiter", maxiter)) if warm_start else maxiter


def adds_repulsion(parameters: dict[str, Any], warm_start: bool, ladder: bool = False) -> bool:
    """Whether pacemaker adds the ZBL inner core at the end of the fit (``fit.repulsion: auto``).

    By default after a fit from scratch only: a continued output potential already has it, while an interim one
    (saved during a fit) has not, so a continuation from an interim potential asks for it with ``repulsion: auto``.
    """
    return parameters.get("repulsion", "none" if warm_start or ladder else "auto") == "auto"


def build_input_yaml(
    parameters: dict[str, Any],
    elements: list[str],
    has_test_set: bool,
    warm_start: bool,
    reference_energy: Any = None,
    ladder: bool = False,
) -> dict[str, Any]:
    """pacemaker's ``input.yaml`` for these settings (data files: the driver's pickles)."""
    cutoff = float(parameters.get("cutoff", 5.0))
    basis = {
        "deltaSplineBins": 0.001,
        "elements": elements,
        "embeddings": parameters.get(
            "embeddings",
            {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1, 1, 0.5], "ndensity": 2}},
        ),
        "bonds": parameters.get(
            "bonds",
            {
                "ALL": {
                    "radbase": "SBessel",
                    "radparameters": [5.25],
                    "rcut": cutoff,
                    "dcut": 0.01,
                    "NameOfCutoffFunction": "cos",
                }
            },
        ),
        "functions": {
            "number_of_functions_per_element": parameters.get("number_of_functions_per_element", 20),
            **parameters.get(
                "functions", {"ALL": {"nradmax_by_orders": [15, 3, 2, 1], "lmax_by_orders": [0, 2, 2, 1]}}
            ),
        },
    }
    if ladder:
        basis["initial_potential"] = LADDER_INITIAL
    data: dict[str, Any] = {"filename": "train.pckl.gzip"}
    if has_test_set:
        data["test_filename"] = "test.pckl.gzip"
    elif parameters.get("test_size"):
        data["test_size"] = parameters["test_size"]
    data["reference_energy"] = (
        reference_energy if reference_energy is not None else parameters.get("reference_energy", "auto")
    )
    fit: dict[str, Any] = {
        "loss": {
            "kappa": parameters.get("kappa", 0.3),
            "L1_coeffs": parameters.get("L1_coeffs", 1e-8),
            "L2_coeffs": parameters.get("L2_coeffs", 1e-8),
        },
        "optimizer": parameters.get("optimizer", "BFGS"),
        "maxiter": fit_iterations(parameters, warm_start),
    }
    if "optimizer_options" in parameters:
        fit["options"] = {**DEFAULT_OPTIMIZER_OPTIONS, **parameters["optimizer_options"]}
    for key in ("weighting", "ladder_step", "ladder_type", "min_relative_train_loss_per_iter"):
        if key in parameters:
            fit[key] = parameters[key]
    if adds_repulsion(parameters, warm_start, ladder):
        fit["repulsion"] = "auto"
    return {
        "cutoff": cutoff,
        "seed": parameters.get("seed", 42),
        "metadata": {"origin": "aiida-pyacemaker PacemakerCalculation"},
        "potential": PREVIOUS if warm_start else basis,
        "data": data,
        "fit": fit,
        "backend": {
            "evaluator": parameters.get("backend", "tensorpot"),
            "batch_size": parameters.get("batch_size", 100),
            "display_step": parameters.get("display_step", 10),
        },
    }


def row_weights(training_set: LabelledStructuresData, source_weights: dict[str, float]) -> list[float]:
    """pacemaker's ``w_factor`` per row: the row's own weight (e.g. replay) times its label source's weight."""
    sources = training_set.get_array("source")
    weights = training_set.get_array("weight")
    pairs = zip(sources, weights, strict=True)
    return [float(weight) * float(source_weights.get(str(source), 1.0)) for source, weight in pairs]


class PacemakerCalculation(CalcJob):
    """Fit an ACE potential on labelled structures from the graph; optionally continue a previous potential."""

    CACHE_VERSION = 1

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("training_set", valid_type=LabelledStructuresData, help="Labelled structures to fit.")
        spec.input("test_set", valid_type=LabelledStructuresData, required=False, help="Held-out structures.")
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            validator=validate_parameters,
            help="Fit settings; see protocols/pacemaker/base.yaml.",
        )
        spec.input(
            "previous_potential",
            valid_type=AcePotentialData,
            required=False,
            help="Continue from this potential: same basis, its coefficients and reference energies.",
        )
        spec.input(
            "ladder_initial_potential",
            valid_type=AcePotentialData,
            required=False,
            help="Ladder fitting: grow the basis starting from this potential (pacemaker's initial_potential).",
        )
        spec.inputs.validator = validate_inputs
        set_serial_defaults(spec, "pyacemaker.pacemaker")
        spec.output("potential", valid_type=AcePotentialData)
        spec.output("metrics", valid_type=orm.Dict, help="RMSEs (meV/atom, meV/A per component), loss, iterations.")
        spec.output("learning_curve", valid_type=orm.ArrayData, help="Loss and RMSEs per iteration.")
        spec.output(
            "interim_potential",
            valid_type=AcePotentialData,
            required=False,
            help="The newest potential pacemaker saved during a fit that was stopped (walltime, killed): continue "
            "from it as previous_potential.",
        )
        spec.exit_code(300, "ERROR_NO_POTENTIAL", message="The fit wrote no output_potential.yaml.")
        spec.exit_code(301, "ERROR_METRICS_MISSING", message="pacemaker's metrics.txt is missing or empty.")
        spec.exit_code(311, "ERROR_INPUT_UNREADABLE", message="The training data could not be read: {message}")
        spec.exit_code(320, "ERROR_FIT_FAILED", message="pacemaker failed: {message}")
        spec.exit_code(321, "ERROR_CONVERSION_FAILED", message="pace_yaml2yace or pace_activeset failed: {message}")
        spec.exit_code(330, "ERROR_ZERO_ITERATIONS", message="The fit ran zero iterations: nothing was fitted.")
        spec.exit_code(331, "ERROR_NONFINITE_LOSS", message="The fit's loss is not finite.")
        spec.exit_code(
            400,
            "ERROR_OUT_OF_WALLTIME",
            message="The fit ran out of walltime; the newest interim potential, if any, is the interim_potential "
            "output.",
        )
        spec.exit_code(
            401,
            "ERROR_INTERRUPTED",
            message="The fit was stopped before it wrote output_potential.yaml ({message}); the newest interim "
            "potential is the interim_potential output.",
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        from ase.io import write

        parameters = self.inputs.parameters.get_dict()
        training = self.inputs.training_set
        weights = row_weights(training, parameters.get("source_weights", {}))
        structures = training.to_labelled_atoms(weight_key="w_factor")
        for atoms, weight in zip(structures, weights, strict=True):
            atoms.info["w_factor"] = weight
        with folder.open(TRAIN_XYZ, "w") as handle:
            write(handle, structures, format="extxyz")
        driver_args = ["--train", TRAIN_XYZ]
        if "test_set" in self.inputs:
            with folder.open(TEST_XYZ, "w") as handle:
                write(handle, self.inputs.test_set.to_labelled_atoms(weight_key="w_factor"), format="extxyz")
            driver_args += ["--test", TEST_XYZ]

        warm_start = "previous_potential" in self.inputs
        ladder = "ladder_initial_potential" in self.inputs
        reference_energy = None
        if warm_start:
            previous = self.inputs.previous_potential
            folder.create_file_from_filelike(_as_stream(previous.get_yaml()), PREVIOUS, mode="w")
            driver_args += ["--previous", PREVIOUS]
            reference_energy = previous.reference_energy
        if ladder:
            folder.create_file_from_filelike(
                _as_stream(self.inputs.ladder_initial_potential.get_yaml()), LADDER_INITIAL, mode="w"
            )
        if parameters.get("active_set"):
            driver_args.append("--active-set")
        for key in ("zbl_inner_margin", "zbl_blend_width"):
            if key in parameters:
                driver_args.append(f"--{key.replace('_', '-')}={float(parameters[key])}")
        content = build_input_yaml(
            parameters, training.elements, "test_set" in self.inputs, warm_start, reference_energy, ladder
        )
        with folder.open(INPUT_FILE, "w") as handle:
            yaml.safe_dump(content, handle, sort_keys=False)
        copy_executable(folder, DRIVER)

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [DRIVER, *driver_args]
        codeinfo.stdout_name = "aiida.out"
        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [
            "output_potential.yaml",
            "output_potential.yace",
            "output_potential.asi",
            "metrics.txt",
            "test_metrics.txt",
            "log.txt",
            "error.json",
            "driver_summary.json",
            "aiida.out",
            INTERIM_PATTERN,
        ]
        return calcinfo


def _as_stream(text: str):
    import io

    return io.StringIO(text)
