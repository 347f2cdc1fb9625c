"""``PacemakerBaseWorkChain``: runs a ``PacemakerCalculation`` and restarts it on the failures a restart can fix.

Handlers (highest priority first):

* ``handle_unreadable_input`` (311): training or test data the driver cannot read fail again on every restart: abort
  at once with the child's message;
* ``handle_zero_iterations`` (330): the fit ran no iteration (e.g. the start potential already meets the
  optimiser's tolerance on these data); a restart would fit nothing again: abort with a clear message;
* ``handle_out_of_walltime`` (400, or the scheduler's 120) and ``handle_interrupted`` (401, the fit killed before
  ``output_potential.yaml``): continue from the child's ``interim_potential`` (pacemaker's newest
  ``interim_potential_*.yaml``) as ``previous_potential``, with ``warm_start_maxiter`` set to the iterations the
  stopped fit had left (at least ``defaults.minimum_continuation_iterations``); a fit from scratch also asks for
  ``repulsion: auto`` (an interim potential has no ZBL inner core yet). The driver strips ``_fit_cycles`` from it.
  No interim potential (stopped before the first iteration), or a ladder fit (basis growth, which a warm start
  cannot resume): abort with ``ERROR_CANNOT_CONTINUE``;
* ``handle_nonfinite_loss`` (331): restart from the last good potential (the child's ``previous_potential`` for a
  warm start, else from scratch) with shorter optimiser steps. First the Armijo constant of BFGS's line search,
  ``optimizer_options.c1`` (pacemaker's ``fit.options``, passed to ``scipy.optimize.minimize``), goes from scipy's
  1e-4 to ``defaults.line_search_c1`` (0.5): a trial step is accepted only if the loss falls by at least half of
  what the slope promises, so the line search backtracks instead of taking long steps (measured: the first BFGS
  step on the Si test data shrinks from 1.01 to 0.43 in coefficient norm). L-BFGS-B has no such option, so the
  optimiser becomes BFGS. If the loss is still not finite, ``L2_coeffs`` is multiplied by
  ``defaults.regularisation_factor`` (100); after that the work chain aborts.

Any other failure (no potential, no metrics, pacemaker or pace_yaml2yace failing) is left to
``BaseRestartWorkChain``'s ``on_unhandled_failure``.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import CalcJob, ProcessHandlerReport, process_handler
from aiida.engine.processes.builder import ProcessBuilder

from ...calculations.pacemaker import PacemakerCalculation, adds_repulsion, fit_iterations, validate_parameters
from ...data.ace_potential import AcePotentialData
from ...data.labelled_structures import LabelledStructuresData
from ...protocols import ProtocolError
from ..restart import RestartWrapper

__all__ = ("PacemakerBaseWorkChain",)

#: scipy's default Armijo constant of BFGS's line search.
SCIPY_C1 = 1e-4
SCIPY_C2 = 0.9
#: The ``scipy.optimize.minimize`` options BFGS knows (the others in ``OPTIMIZER_OPTIONS`` are L-BFGS-B's).
BFGS_OPTIONS = ("gtol", "c1", "c2", "xrtol", "norm")


class PacemakerBaseWorkChain(RestartWrapper):
    """Fit an ACE potential (``PacemakerCalculation``), continuing stopped fits and retrying non-finite losses."""

    _process_class = PacemakerCalculation
    _protocol_file = "pacemaker/base"
    _namespace = "pacemaker"
    _exposed_outputs = ("potential", "metrics", "learning_curve")

    #: How the handlers change the inputs.
    defaults = AttributeDict(
        {
            "line_search_c1": 0.5,  # non-finite loss: BFGS's Armijo constant (scipy: 1e-4) for shorter steps
            "regularisation_factor": 100.0,  # non-finite loss again: L2_coeffs multiplied by this
            "minimum_continuation_iterations": 1,  # a continued fit runs at least this many iterations
        }
    )

    @classmethod
    def define(cls, spec) -> None:
        """Expose ``PacemakerCalculation``'s inputs in ``pacemaker`` and its potential, metrics and learning curve."""
        super().define(spec)
        spec.exit_code(
            311,
            "ERROR_INPUT_UNREADABLE",
            message="The training or test data cannot be read; a restart cannot help: {message}",
        )
        spec.exit_code(
            330,
            "ERROR_ZERO_ITERATIONS",
            message="The fit ran zero iterations, so nothing was fitted, and a restart would fit nothing again: "
            "{message}",
        )
        spec.exit_code(
            331,
            "ERROR_NONFINITE_LOSS",
            message="The loss stayed non-finite with a stricter line search and stronger regularisation: {message}",
        )
        spec.exit_code(
            403,
            "ERROR_CANNOT_CONTINUE",
            message="The fit stopped ({reason}) and cannot be continued: {message}",
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode | str,
        training_set: LabelledStructuresData | None = None,
        test_set: LabelledStructuresData | None = None,
        previous_potential: AcePotentialData | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """A builder filled from ``protocols/pacemaker/base.yaml``.

        :param code: the code (or its label) that runs the fit driver with python-ace.
        :param training_set: the labelled structures; leave it out when a parent sets ``pacemaker.training_set``.
        :param test_set: optional held-out structures (test metrics per iteration).
        :param previous_potential: continue this potential (warm start: same basis, its coefficients).
        :param protocol: ``fast``, ``balanced`` or ``stringent`` (default: the file's ``default_protocol``).
        :param overrides: nested inputs merged over the protocol's, in the layout of this work chain's ports.
        :param options: merged over ``pacemaker.metadata.options``.
        :raises ProtocolError: for an unknown protocol, a key that is no input or an invalid fit parameter.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        parameters = inputs.get("pacemaker", {}).get("parameters")
        if isinstance(parameters, dict):
            error = validate_parameters(orm.Dict(parameters), None)
            if error:
                raise ProtocolError(f"pacemaker.{error}")
        return cls.builder_from_protocol_inputs(
            inputs,
            code,
            options,
            training_set=training_set,
            test_set=test_set,
            previous_potential=previous_potential,
        )

    def setup(self) -> None:
        """``ctx.inputs`` from the ``pacemaker`` namespace, ``parameters`` as a plain dict the handlers change."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(PacemakerCalculation, "pacemaker"))
        self.ctx.inputs.parameters = self.ctx.inputs.parameters.get_dict()
        self.ctx.regularisation_raised = False

    @process_handler(priority=600, exit_codes=[PacemakerCalculation.exit_codes.ERROR_INPUT_UNREADABLE])
    def handle_unreadable_input(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Data the driver cannot read fail again on restart: abort."""
        self.report_error_handled(node, "the training or test data are unreadable, a restart cannot help: aborting")
        return ProcessHandlerReport(True, self.exit_codes.ERROR_INPUT_UNREADABLE.format(message=node.exit_message))

    @process_handler(priority=590, exit_codes=[PacemakerCalculation.exit_codes.ERROR_ZERO_ITERATIONS])
    def handle_zero_iterations(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """A fit that ran no iteration would run none again with the same inputs: abort, saying why it may be."""
        parameters = node.inputs.parameters.get_dict()
        warm = "previous_potential" in node.inputs
        loss = node.outputs.metrics.get("initial_loss") if "metrics" in node.outputs else None
        start = "the previous potential" if warm else "the initial basis"
        message = (
            f"pacemaker stopped before its first iteration (maxiter {fit_iterations(parameters, warm)}, loss "
            f"{loss}); {start} may already meet the optimiser's gradient tolerance on these data, or the start "
            "potential carries `_fit_cycles` metadata. Check the data and the start potential; nothing was fitted."
        )
        self.report_error_handled(node, "zero iterations, a restart would fit nothing again: aborting")
        return ProcessHandlerReport(True, self.exit_codes.ERROR_ZERO_ITERATIONS.format(message=message))

    @process_handler(
        priority=580,
        exit_codes=[
            PacemakerCalculation.exit_codes.ERROR_OUT_OF_WALLTIME,
            CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME,
        ],
    )
    def handle_out_of_walltime(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Out of walltime: continue from the newest interim potential with the iterations left."""
        return self._continue_from_interim(node, "out of walltime")

    @process_handler(priority=570, exit_codes=[PacemakerCalculation.exit_codes.ERROR_INTERRUPTED])
    def handle_interrupted(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Killed before the output potential: continue from the newest interim potential with the iterations left."""
        return self._continue_from_interim(node, "interrupted")

    @process_handler(priority=560, exit_codes=[PacemakerCalculation.exit_codes.ERROR_NONFINITE_LOSS])
    def handle_nonfinite_loss(self, node: orm.CalcJobNode) -> ProcessHandlerReport:
        """Non-finite loss: restart from the last good potential with a stricter line search, then more L2."""
        parameters = self.ctx.inputs.parameters
        options = dict(parameters.get("optimizer_options", {}))
        c1 = float(options.get("c1", SCIPY_C1))
        c2 = float(options.get("c2", SCIPY_C2))
        target_c1 = float(self.defaults.line_search_c1)
        target_c1 = target_c1 if target_c1 < c2 else c2 / 2  # the Wolfe conditions need c1 < c2
        if parameters.get("optimizer", "BFGS") != "BFGS" or c1 < target_c1:
            options = {key: value for key, value in options.items() if key in BFGS_OPTIONS}  # L-BFGS-B's go
            options["c1"] = max(c1, target_c1)
            parameters["optimizer_options"] = options
            action = (
                f"optimizer {parameters.get('optimizer', 'BFGS')} -> BFGS with line-search c1 {c1:g} -> "
                f"{options['c1']:g} (shorter steps)"
            )
            parameters["optimizer"] = "BFGS"
        elif not self.ctx.regularisation_raised:
            l2 = float(parameters.get("L2_coeffs", 1e-8))
            parameters["L2_coeffs"] = l2 * float(self.defaults.regularisation_factor)
            self.ctx.regularisation_raised = True
            action = f"L2_coeffs {l2:g} -> {parameters['L2_coeffs']:g} (stronger regularisation)"
        else:
            self.report_error_handled(node, "the loss stayed non-finite after every remedy: aborting")
            message = (
                f"line-search c1 {c1:g}, L2_coeffs {parameters.get('L2_coeffs')}; check the data for outliers "
                "and the start potential"
            )
            return ProcessHandlerReport(True, self.exit_codes.ERROR_NONFINITE_LOSS.format(message=message))

        if "previous_potential" in node.inputs:
            self.ctx.inputs.previous_potential = node.inputs.previous_potential
            start = f"the previous potential<{node.inputs.previous_potential.pk}>"
        else:
            self.ctx.inputs.pop("previous_potential", None)
            start = "scratch"
        self.report_error_handled(node, f"{action}; restarting from {start}")
        return ProcessHandlerReport(True)

    def _continue_from_interim(self, node: orm.CalcJobNode, reason: str) -> ProcessHandlerReport:
        """Next run: warm start from ``node``'s interim potential with the iterations it had left."""
        if "ladder_initial_potential" in node.inputs:
            message = (
                "a ladder fit (basis growth) cannot be resumed from an interim potential; rerun it with more walltime"
            )
            self.report_error_handled(node, f"{message}: aborting")
            return ProcessHandlerReport(
                True, self.exit_codes.ERROR_CANNOT_CONTINUE.format(reason=reason, message=message)
            )
        if "interim_potential" not in node.outputs:
            message = (
                "pacemaker saved no interim potential before it stopped (not one iteration done); "
                "give the job more walltime (metadata.options.max_wallclock_seconds) or fewer data"
            )
            self.report_error_handled(node, f"{message}: aborting")
            return ProcessHandlerReport(
                True, self.exit_codes.ERROR_CANNOT_CONTINUE.format(reason=reason, message=message)
            )

        child_parameters = node.inputs.parameters.get_dict()
        warm = "previous_potential" in node.inputs
        planned = fit_iterations(child_parameters, warm)
        done = int(node.outputs.metrics.get("iterations", 0)) if "metrics" in node.outputs else 0
        remaining = max(planned - done, int(self.defaults.minimum_continuation_iterations))

        parameters = self.ctx.inputs.parameters
        parameters["warm_start_maxiter"] = remaining
        if adds_repulsion(child_parameters, warm):
            parameters["repulsion"] = "auto"  # the interim potential has no inner core yet; add it at the end
        interim = node.outputs.interim_potential
        self.ctx.inputs.previous_potential = interim
        self.report_error_handled(
            node,
            f"{reason} after {done} of {planned} iterations: continuing from the interim potential<{interim.pk}> "
            f"with warm_start_maxiter {remaining}",
        )
        return ProcessHandlerReport(True)
