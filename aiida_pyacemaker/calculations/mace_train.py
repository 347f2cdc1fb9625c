"""``MaceTrainCalculation``: train (or naively fine-tune) MACE models with ``mace_run_train``.

Training data come from the provenance graph as ``LabelledStructuresData``. One job trains one model per seed,
one after another: a committee of three is ``seeds=[0, 1, 2]`` (or three jobs with one seed each).
Fine-tuning starts from ``foundation_model`` (naive fine-tune); ``replay_set`` rows are mixed into the training
file. Multihead fine-tuning is off: mace-torch 0.3.16 crashes on it for single-element models.

A job killed by the scheduler (walltime) is continued by a new job with ``parent_folder`` (the killed job's
``remote_folder``) and ``parameters.restart_latest = True``: the parent's ``checkpoints/`` folder is copied in and
mace_run_train, run with the same ``--name``/``--seed``, resumes each seed from its latest checkpoint.
``MaceTrainBaseWorkChain`` (``pyacemaker.mace.train.base``) does this, and more, automatically.
"""

from __future__ import annotations

import pathlib
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo, CodeRunMode
from aiida.common.folders import Folder
from aiida.engine import CalcJob

from ..data.labelled_structures import LabelledStructuresData
from ..data.mace_model import MaceModelData
from .common import set_serial_defaults

TRAIN_FILE = "train.xyz"
VALID_FILE = "valid.xyz"
FOUNDATION_FILE = "foundation.model"
MODEL_NAME = "mace"
#: mace_run_train's default ``checkpoints_dir`` (``<work_dir>/checkpoints``); a restart copies it from the parent.
CHECKPOINTS_DIR = "checkpoints"

#: Keys the CalcJob sets itself; a user value for them would break the job's file layout.
RESERVED_KEYS = frozenset(
    {
        "name",
        "seed",
        "train_file",
        "valid_file",
        "test_file",
        "foundation_model",
        "work_dir",
        "log_dir",
        "model_dir",
        "checkpoints_dir",
        "results_dir",
        "downloads_dir",
        "energy_key",
        "forces_key",
        "stress_key",
        "pt_train_file",
        "save_cpu",
    }
)


#: Options of mace_run_train (mace-torch 0.3.16, mace/tools/arg_parser.py) that are flags without a value:
#: ``action="store_true"`` ones are passed as ``--key`` when the parameter is true and left out when it is false;
#: ``action="store_false"`` ones the other way round. Every other option is passed as ``--key=value``.
STORE_TRUE_FLAGS = frozenset(
    {
        "amsgrad",
        "distributed",
        "dry_run",
        "ema",
        "keep_checkpoints",
        "lbfgs",
        "pair_repulsion",
        "restart_latest",
        "save_all_checkpoints",
        "save_cpu",
        "stage_two",
        "swa",
        "wandb",
    }
)
STORE_FALSE_FLAGS = frozenset({"disallow_random_padding_pt", "foundation_model_readout"})


def model_name(seed: int) -> str:
    return f"{MODEL_NAME}_s{seed}"


def metrics_file(seed: int) -> str:
    return f"results/{model_name(seed)}_run-{seed}_train.txt"


def validate_parameters(value: orm.Dict, _) -> str | None:
    for key, item in value.get_dict().items():
        if key in RESERVED_KEYS:
            return f"parameters.{key} is set by MaceTrainCalculation itself and cannot be given"
        if not isinstance(item, (str, int, float, bool)):
            return f"parameters.{key} must be a string, number or boolean, not {type(item).__name__}"
    if value.get("multiheads_finetuning") not in (None, False, "False", "false"):
        return "parameters.multiheads_finetuning: only naive fine-tuning is supported (mace-torch 0.3.16 crashes)"
    for key in sorted((STORE_TRUE_FLAGS | STORE_FALSE_FLAGS) & set(value.keys())):
        if not isinstance(value[key], bool):
            return f"parameters.{key} is a flag of mace_run_train: give true or false, not {value[key]!r}"
    return None


def validate_seeds(value: orm.List, _) -> str | None:
    seeds = value.get_list()
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 for seed in seeds):
        return "seeds: give a non-empty list of integers >= 0"
    if len(set(seeds)) != len(seeds):
        return f"seeds: duplicates in {seeds}"
    return None


def training_rows(total: int, valid_fraction: float | None) -> int:
    """How many structures mace_run_train trains on when it splits ``valid_fraction`` off ``total`` (its rule)."""
    if not valid_fraction:
        return total
    return min(total - int(valid_fraction * total), total - 1)


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    if "parameters" not in inputs or "training_set" not in inputs:
        return None  # a missing required port is reported by its own validation
    parameters = inputs["parameters"].get_dict()
    if "parent_folder" in inputs and parameters.get("restart_latest") is not True:
        return "parent_folder is given: set parameters.restart_latest to true (the checkpoints are copied for it)"
    if "validation_set" not in inputs and not parameters.get("valid_fraction"):
        return "give a validation_set or parameters.valid_fraction > 0"
    total = len(inputs["training_set"]) + (len(inputs["replay_set"]) if "replay_set" in inputs else 0)
    fraction = None if "validation_set" in inputs else parameters.get("valid_fraction")
    rows = training_rows(total, fraction)
    if rows < 1:
        return f"{total} structure(s) leave nothing to train on after the validation split: give a validation_set"
    if int(parameters.get("batch_size", 10)) > rows:
        return f"parameters.batch_size ({parameters['batch_size']}) is larger than the {rows} training structures"
    return None


def drop_empty_info(structures: list) -> list:
    """Remove empty strings from ``atoms.info`` (e.g. an unknown ``structure_uuid``).

    ASE writes them as ``key=`` in the extended XYZ comment line and reads the next ``key=value`` pair as their
    value: ``structure_uuid= config_type=replay`` would hide ``config_type`` from mace_run_train.
    """
    for atoms in structures:
        for key in [key for key, value in atoms.info.items() if isinstance(value, str) and not value]:
            del atoms.info[key]
    return structures


def as_flag(key: str, value: Any) -> str:
    return f"--{key}={value}"


def as_flags(parameters: dict[str, Any]) -> list[str]:
    """mace_run_train's command-line options for ``parameters``, sorted by key; flags without a value as such."""
    flags = []
    for key, value in sorted(parameters.items()):
        if key in STORE_TRUE_FLAGS:
            flags += [f"--{key}"] if value else []
        elif key in STORE_FALSE_FLAGS:
            flags += [] if value else [f"--{key}"]
        else:
            flags.append(as_flag(key, value))
    return flags


class MaceTrainCalculation(CalcJob):
    """Train MACE models (one per seed) on labelled structures from the graph; optionally fine-tune."""

    CACHE_VERSION = 1

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("training_set", valid_type=LabelledStructuresData, help="Labelled structures to train on.")
        spec.input("validation_set", valid_type=LabelledStructuresData, required=False)
        spec.input(
            "replay_set",
            valid_type=LabelledStructuresData,
            required=False,
            help="Older structures mixed into the training file (fine-tuning without forgetting).",
        )
        spec.input("foundation_model", valid_type=MaceModelData, required=False, help="Fine-tune from this model.")
        spec.input(
            "parent_folder",
            valid_type=orm.RemoteData,
            required=False,
            help="Remote folder of an interrupted MaceTrainCalculation: its checkpoints/ are copied in; "
            "use with parameters.restart_latest = true to continue the training.",
        )
        spec.input("seeds", valid_type=orm.List, default=lambda: orm.List([0]), validator=validate_seeds)
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            validator=validate_parameters,
            help="mace_run_train options (key: value); see protocols/mace_train/base.yaml.",
        )
        spec.inputs.validator = validate_inputs
        set_serial_defaults(spec, "pyacemaker.mace.train")
        spec.output_namespace("models", valid_type=MaceModelData, dynamic=True, help="One model per seed: s<seed>.")
        spec.output("metrics", valid_type=orm.Dict, help="Per seed: epochs and train/valid energy and force RMSE.")
        spec.exit_code(300, "ERROR_MODEL_MISSING", message="mace_run_train wrote no model for seed {seed}.")
        spec.exit_code(301, "ERROR_METRICS_MISSING", message="No training metrics found for seed {seed}.")
        spec.exit_code(320, "ERROR_TRAINING_DIVERGED", message="Training diverged (non-finite loss) for seed {seed}.")
        spec.exit_code(
            400,
            "ERROR_OUT_OF_WALLTIME",
            message="The job ran out of walltime: models and metrics of the seeds that finished are attached, "
            "the checkpoints stay in the remote folder (continue with parent_folder and restart_latest).",
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        from ase.io import write

        training = self.inputs.training_set.to_labelled_atoms()
        for atoms in training:
            atoms.info["config_type"] = atoms.info.get("config_type") or "new"
        if "replay_set" in self.inputs:
            replay = self.inputs.replay_set.to_labelled_atoms()
            for atoms in replay:
                atoms.info["config_type"] = "replay"
            training += replay
        with folder.open(TRAIN_FILE, "w") as handle:
            write(handle, drop_empty_info(training), format="extxyz")
        if "validation_set" in self.inputs:
            with folder.open(VALID_FILE, "w") as handle:
                write(handle, drop_empty_info(self.inputs.validation_set.to_labelled_atoms()), format="extxyz")

        parameters = self.inputs.parameters.get_dict()
        common = [as_flag("train_file", TRAIN_FILE), "--energy_key=REF_energy", "--forces_key=REF_forces"]
        common.append("--stress_key=REF_stress")
        if "validation_set" in self.inputs:
            common.append(as_flag("valid_file", VALID_FILE))
            parameters.pop("valid_fraction", None)
        calcinfo = CalcInfo()
        calcinfo.local_copy_list = []
        if "foundation_model" in self.inputs:
            model = self.inputs.foundation_model
            calcinfo.local_copy_list.append((model.uuid, model.filename, FOUNDATION_FILE))
            common.append(as_flag("foundation_model", FOUNDATION_FILE))
        calcinfo.remote_copy_list = []
        if "parent_folder" in self.inputs:
            parent = self.inputs.parent_folder
            folder.get_subfolder(CHECKPOINTS_DIR, create=True)
            source = str(pathlib.PurePosixPath(parent.get_remote_path()) / CHECKPOINTS_DIR / "*")
            calcinfo.remote_copy_list.append((parent.computer.uuid, source, CHECKPOINTS_DIR))
        common += as_flags(parameters)

        calcinfo.codes_info = []
        seeds = self.inputs.seeds.get_list()
        for seed in seeds:
            codeinfo = CodeInfo()
            codeinfo.code_uuid = self.inputs.code.uuid
            codeinfo.cmdline_params = [as_flag("name", model_name(seed)), as_flag("seed", seed), *common, "--save_cpu"]
            codeinfo.stdout_name = f"{model_name(seed)}.out"
            calcinfo.codes_info.append(codeinfo)
        calcinfo.codes_run_mode = CodeRunMode.SERIAL
        calcinfo.retrieve_list = [f"{model_name(seed)}.model" for seed in seeds]
        calcinfo.retrieve_list += [metrics_file(seed) for seed in seeds]
        calcinfo.retrieve_list += [f"{model_name(seed)}.out" for seed in seeds]
        return calcinfo
