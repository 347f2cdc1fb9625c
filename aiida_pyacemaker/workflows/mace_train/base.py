"""``MaceTrainBaseWorkChain``: runs ``MaceTrainCalculation`` and restarts it when it can be fixed.

Handlers (``handle_<condition>``, aiida-quantumespresso's style):

* ``handle_out_of_walltime`` (400): the next job continues from the checkpoints of the killed one
  (``parent_folder`` = its ``remote_folder``, ``parameters.restart_latest = True``). Every seed runs again and
  resumes from its own latest checkpoint; a seed that had finished resumes at its best epoch, so it costs only the
  epochs after that one. Aborts when a job made no progress (no new epoch, no new model).
* ``handle_training_diverged`` (320): the next job starts again from the same start (scratch or the foundation
  model, not from a checkpoint) with the learning rate halved, at most ``defaults.max_lr_halvings`` times. The seeds
  are never changed, so the outputs stay ``models.s<seed>`` for the seeds asked for.
* ``handle_known_unrecoverable_failure`` (300, 301): mace_run_train wrote no model or no metrics, i.e. it
  crashed; the same inputs would crash again: abort.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.common.lang import type_check
from aiida.common.links import LinkType
from aiida.engine import ProcessHandlerReport, process_handler
from aiida.engine.processes.builder import ProcessBuilder

from ...calculations.mace_train import MaceTrainCalculation
from ...data.labelled_structures import LabelledStructuresData
from ...data.mace_model import MaceModelData
from ...protocols import recursive_merge
from ..restart import RestartWrapper

#: The key of the fine-tuning parameters in the protocol file (a meta input, not a port).
FINE_TUNE_KEY = "fine_tune_parameters"


def training_state(node: orm.CalcJobNode) -> dict[str, tuple[bool, int]]:
    """Per seed key (``s<seed>``) of a finished ``MaceTrainCalculation``: (model written, epochs finished)."""
    labels = node.base.links.get_outgoing(link_type=LinkType.CREATE).all_link_labels()
    epochs = node.outputs.metrics.get_dict() if "metrics" in labels else {}
    models = {label.split("__", 1)[1] for label in labels if label.startswith("models__")}
    keys = set(epochs) | models
    return {key: (key in models, int(epochs.get(key, {}).get("epochs", 0))) for key in keys}


class MaceTrainBaseWorkChain(RestartWrapper):
    """Train MACE models with ``MaceTrainCalculation``; restart after a walltime kill or a diverged training."""

    _process_class = MaceTrainCalculation
    _protocol_file = "mace_train/base"
    _namespace = "mace_train"

    defaults = AttributeDict(
        {
            # mace_run_train's default learning rate (mace-torch 0.3.16, mace/tools/arg_parser.py: --lr 0.01),
            # the one a job without parameters.lr used.
            "lr": 0.01,
            "lr_factor": 0.5,
            "max_lr_halvings": 3,
        }
    )

    @classmethod
    def define(cls, spec):
        """Inputs of the CalcJob in ``mace_train``, its outputs at the top level."""
        super().define(spec)
        spec.exit_code(
            310,
            "ERROR_KNOWN_UNRECOVERABLE_FAILURE",
            message="MaceTrainCalculation<{pk}> failed with exit status {status} ({message}); "
            "the same inputs would fail again.",
        )
        spec.exit_code(
            320,
            "ERROR_TRAINING_DIVERGED",
            message="The training still diverged after the learning rate was halved {count} times (last lr {lr}).",
        )
        spec.exit_code(
            330,
            "ERROR_OUT_OF_WALLTIME_NO_PROGRESS",
            message="MaceTrainCalculation<{pk}> ran out of walltime without a new epoch or model since the last "
            "restart: raise mace_train.metadata.options.max_wallclock_seconds.",
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode | str,
        training_set: LabelledStructuresData | None = None,
        foundation_model: MaceModelData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **_: Any,
    ) -> ProcessBuilder:
        """A builder with the inputs of ``protocol`` (``fast``, ``balanced``, ``stringent``) and ``overrides``.

        With a ``foundation_model`` (or ``overrides['mace_train']['foundation_model']``) the protocol's
        ``fine_tune_parameters`` replace its from-scratch ``mace_train.parameters``; ``overrides`` of
        ``mace_train.parameters`` apply to either. ``training_set`` may be left out and set later (by a parent).
        ``options`` are merged into ``mace_train.metadata.options``. An unknown protocol or override key raises
        ``ProtocolError`` naming it.
        """
        type_check(training_set, LabelledStructuresData, allow_none=True)
        type_check(foundation_model, MaceModelData, allow_none=True)
        inputs = cls.get_protocol_inputs(protocol, overrides)
        fine_tune_parameters = inputs.pop(FINE_TUNE_KEY)
        if foundation_model is not None or inputs.get("mace_train", {}).get("foundation_model") is not None:
            parameter_overrides = (overrides or {}).get("mace_train", {}).get("parameters", {})
            inputs["mace_train"]["parameters"] = recursive_merge(fine_tune_parameters, parameter_overrides)
        return cls.builder_from_protocol_inputs(
            inputs, code, options, training_set=training_set, foundation_model=foundation_model
        )

    def setup(self) -> None:
        """The CalcJob's inputs in ``ctx.inputs`` (``parameters`` as a plain dict), the restart bookkeeping."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(MaceTrainCalculation, "mace_train"))
        self.ctx.inputs.parameters = self.ctx.inputs.parameters.get_dict()
        self.ctx.lr_halvings = 0
        self.ctx.training_state = {}

    def restart_from_start(self) -> None:
        """Next job starts where the first one started: no checkpoints unless the inputs gave a parent_folder."""
        original = self.inputs.mace_train
        if "parent_folder" in original:
            self.ctx.inputs.parent_folder = original.parent_folder
        else:
            self.ctx.inputs.pop("parent_folder", None)
        parameters = original.parameters.get_dict()
        if "restart_latest" in parameters:
            self.ctx.inputs.parameters["restart_latest"] = parameters["restart_latest"]
        else:
            self.ctx.inputs.parameters.pop("restart_latest", None)
        self.ctx.training_state = {}

    @process_handler(
        priority=600,
        exit_codes=[
            MaceTrainCalculation.exit_codes.ERROR_MODEL_MISSING,
            MaceTrainCalculation.exit_codes.ERROR_METRICS_MISSING,
        ],
    )
    def handle_known_unrecoverable_failure(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """mace_run_train crashed (no model or no metrics): its stdout says why; abort."""
        self.report_error_handled(node, f"unrecoverable, see the stdout files in the retrieved folder<{node.pk}>")
        exit_code = self.exit_codes.ERROR_KNOWN_UNRECOVERABLE_FAILURE.format(
            pk=node.pk, status=node.exit_status, message=node.exit_message
        )
        return ProcessHandlerReport(True, exit_code)

    @process_handler(priority=500, exit_codes=[MaceTrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Continue from the killed job's checkpoints, unless it made no progress since the last restart."""
        state = training_state(node)
        previous = self.ctx.training_state
        if not any(value > previous.get(key, (False, 0)) for key, value in state.items()):
            self.report_error_handled(node, "no new epoch or model in this job: aborting")
            return ProcessHandlerReport(True, self.exit_codes.ERROR_OUT_OF_WALLTIME_NO_PROGRESS.format(pk=node.pk))
        self.ctx.training_state = state
        remote = node.outputs.remote_folder
        self.ctx.inputs.parent_folder = remote
        self.ctx.inputs.parameters["restart_latest"] = True
        self.report_error_handled(node, f"continuing from the checkpoints in RemoteData<{remote.pk}>")
        return ProcessHandlerReport(True)

    @process_handler(priority=400, exit_codes=[MaceTrainCalculation.exit_codes.ERROR_TRAINING_DIVERGED])
    def handle_training_diverged(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Start again from the same start with half the learning rate; abort after ``max_lr_halvings``."""
        lr = float(self.ctx.inputs.parameters.get("lr", self.defaults.lr))
        if self.ctx.lr_halvings >= self.defaults.max_lr_halvings:
            self.report_error_handled(node, f"diverged with lr {lr} after {self.ctx.lr_halvings} halvings: aborting")
            exit_code = self.exit_codes.ERROR_TRAINING_DIVERGED.format(count=self.ctx.lr_halvings, lr=lr)
            return ProcessHandlerReport(True, exit_code)
        new_lr = lr * self.defaults.lr_factor
        self.ctx.lr_halvings += 1
        self.ctx.inputs.parameters["lr"] = new_lr
        self.restart_from_start()
        self.report_error_handled(node, f"starting again with lr {new_lr} (was {lr})")
        return ProcessHandlerReport(True)
