"""``PacemakerBaseWorkChain``: one test per handler, the protocols, and (slow) one real fit through the wrapper."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import ProcessHandlerReport

from aiida_pyacemaker.calculations.pacemaker import PacemakerCalculation
from aiida_pyacemaker.data import AcePotentialData, LabelledStructuresData
from aiida_pyacemaker.protocols import ProtocolError, builder_inputs
from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain

from ..conftest import FIXTURES

ENTRY_POINT_CALC = "pyacemaker.pacemaker"
ENTRY_POINT_WORK = "pyacemaker.pacemaker.base"
CALC_CODES = PacemakerCalculation.exit_codes
WORK_CODES = PacemakerBaseWorkChain.exit_codes
POTENTIAL_FILES = FIXTURES / "pyacemaker_pacemaker" / "_potential"

#: The `fast` fit settings of the former protocols/pacemaker.yaml, which the new protocol file must keep.
OLD_FAST = {
    "cutoff": 5.0,
    "number_of_functions_per_element": 20,
    "functions": {"ALL": {"nradmax_by_orders": [15, 3, 2, 1], "lmax_by_orders": [0, 2, 2, 1]}},
    "kappa": 0.6,
    "L1_coeffs": 1.0e-8,
    "L2_coeffs": 1.0e-8,
    "optimizer": "BFGS",
    "maxiter": 200,
    "warm_start_maxiter": 60,
    "backend": "tensorpot",
    "batch_size": 100,
    "source_weights": {"dft": 2.0, "mace": 1.0, "other": 1.0},
    "active_set": True,  # gamma on every test set (pace_activeset takes about a second)
    "seed": 42,
}
OLD_BALANCED = {
    **{key: value for key, value in OLD_FAST.items() if key != "functions"},
    "cutoff": 6.0,
    "number_of_functions_per_element": 150,
    "kappa": 0.3,
    "maxiter": 1500,
    "warm_start_maxiter": 400,
    "active_set": True,
}


@pytest.fixture
def training_set(si_dft_set):
    return LabelledStructuresData.from_atoms(si_dft_set[:4], source="dft")


@pytest.fixture
def previous_potential():
    """A real tiny Si output potential (the parser fixtures' ``output_potential``)."""
    return AcePotentialData.from_files(
        POTENTIAL_FILES / "output_potential.yaml", POTENTIAL_FILES / "output_potential.yace"
    )


@pytest.fixture
def interim_potential():
    """The interim potential of a fit stopped after 11 iterations, as the parser outputs it."""
    path = POTENTIAL_FILES / "interim_potential_stopped.yaml"
    return AcePotentialData.from_files(path, interim=True, source_file="interim_potential_0.yaml")


@pytest.fixture
def generate_inputs(fixture_code, training_set):
    """Inputs of the wrapper: the ``pacemaker`` namespace with ``parameters`` as given."""

    def factory(parameters: dict | None = None, **extra) -> dict:
        pacemaker = {
            "code": fixture_code(ENTRY_POINT_CALC),
            "training_set": training_set,
            "parameters": orm.Dict(parameters if parameters is not None else OLD_FAST),
            **extra,
        }
        return {"pacemaker": pacemaker}

    return factory


@pytest.fixture
def generate_process(generate_workchain, generate_inputs):
    """A set-up wrapper (``setup`` ran, ``ctx.inputs`` filled) ready for a handler."""

    def factory(parameters: dict | None = None, **extra) -> PacemakerBaseWorkChain:
        process = generate_workchain(ENTRY_POINT_WORK, generate_inputs(parameters, **extra))
        process.setup()
        return process

    return factory


@pytest.fixture
def generate_child(failed_child, training_set):
    """The failed fit of the first iteration: its ``parameters`` and start potential, and what the parser output."""

    def factory(exit_status: int, parameters: dict | None = None, outputs: dict | None = None, **inputs):
        inputs = {"parameters": orm.Dict(parameters or OLD_FAST), "training_set": training_set, **inputs}
        return failed_child(ENTRY_POINT_CALC, exit_status, inputs=inputs, outputs=outputs)

    return factory


def attach(process: PacemakerBaseWorkChain, node) -> None:
    """Make ``node`` the child of the first iteration, as ``run_process`` would."""
    process.ctx.children = [node]
    process.ctx.iteration = 1


# --- setup ------------------------------------------------------------------------------------------------------------


def test_setup_takes_the_exposed_inputs(generate_process, training_set):
    process = generate_process()
    assert process.ctx.inputs.parameters == OLD_FAST
    assert isinstance(process.ctx.inputs.parameters, dict)
    assert process.ctx.inputs.training_set.uuid == training_set.uuid
    assert "previous_potential" not in process.ctx.inputs


# --- handlers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exit_status", [CALC_CODES.ERROR_OUT_OF_WALLTIME.status, 120])
def test_handle_out_of_walltime(generate_process, generate_child, interim_potential, exit_status):
    """Out of walltime after 12 of 200 iterations from scratch: continue from the interim potential, 188 left,
    with the ZBL core pacemaker would have added at the end of the fit from scratch."""
    process = generate_process()
    outputs = {"interim_potential": interim_potential, "metrics": orm.Dict({"iterations": 12})}
    node = generate_child(exit_status, outputs=outputs)
    attach(process, node)
    result = process.handle_out_of_walltime(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.previous_potential.uuid == interim_potential.uuid
    assert process.ctx.inputs.parameters == {**OLD_FAST, "warm_start_maxiter": 188, "repulsion": "auto"}
    assert process.inspect_process().status == 0  # a handler dealt with it: the loop runs again
    assert not process.ctx.is_finished


def test_handle_out_of_walltime_without_interim_potential(generate_process, generate_child):
    """Stopped before the first iteration: nothing to continue from, and the same job would stop again: abort."""
    process = generate_process()
    node = generate_child(CALC_CODES.ERROR_OUT_OF_WALLTIME.status)
    attach(process, node)
    result = process.handle_out_of_walltime(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_CANNOT_CONTINUE.status
    assert "no interim potential" in result.exit_code.message and "max_wallclock_seconds" in result.exit_code.message
    assert process.ctx.inputs.parameters == OLD_FAST
    assert process.inspect_process().status == WORK_CODES.ERROR_CANNOT_CONTINUE.status


def test_handle_interrupted(generate_process, generate_child, previous_potential, interim_potential):
    """A warm start killed after 25 of its 60 iterations: continue from the interim potential for the 35 left; the
    start potential already had its inner core, so no ``repulsion`` is added."""
    process = generate_process(previous_potential=previous_potential)
    outputs = {"interim_potential": interim_potential, "metrics": orm.Dict({"iterations": 25})}
    node = generate_child(CALC_CODES.ERROR_INTERRUPTED.status, outputs=outputs, previous_potential=previous_potential)
    attach(process, node)
    result = process.handle_interrupted(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.previous_potential.uuid == interim_potential.uuid
    assert process.ctx.inputs.parameters == {**OLD_FAST, "warm_start_maxiter": 35}
    assert process.inspect_process().status == 0


def test_handle_interrupted_after_the_last_iteration(generate_process, generate_child, interim_potential):
    """Killed while pacemaker wrote its predictions (all iterations done): one more iteration ends the fit."""
    process = generate_process(parameters={**OLD_FAST, "repulsion": "auto"})
    outputs = {"interim_potential": interim_potential, "metrics": orm.Dict({"iterations": 200})}
    node = generate_child(CALC_CODES.ERROR_INTERRUPTED.status, outputs=outputs)
    attach(process, node)
    assert process.handle_interrupted(node).exit_code.status == 0
    assert process.ctx.inputs.parameters["warm_start_maxiter"] == 1
    assert process.ctx.inputs.parameters["repulsion"] == "auto"


def test_handle_interrupted_ladder_fit(generate_process, generate_child, previous_potential, interim_potential):
    """A ladder fit grows its basis step by step; a warm start from an interim file cannot resume that: abort."""
    process = generate_process(ladder_initial_potential=previous_potential)
    node = generate_child(
        CALC_CODES.ERROR_INTERRUPTED.status,
        outputs={"interim_potential": interim_potential},
        ladder_initial_potential=previous_potential,
    )
    attach(process, node)
    result = process.handle_interrupted(node)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_CANNOT_CONTINUE.status
    assert "ladder fit" in result.exit_code.message
    assert "previous_potential" not in process.ctx.inputs


def test_handle_nonfinite_loss(generate_process, generate_child, previous_potential, interim_potential):
    """Non-finite loss in a warm start: restart from the child's start potential (the last good one), first with
    BFGS's Armijo constant c1 at 0.5 (shorter steps), then with 100 x L2, then abort."""
    process = generate_process(previous_potential=previous_potential)
    process.ctx.inputs.previous_potential = interim_potential  # whatever a handler put there is not the last good one
    node = generate_child(CALC_CODES.ERROR_NONFINITE_LOSS.status, previous_potential=previous_potential)
    attach(process, node)
    result = process.handle_nonfinite_loss(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.previous_potential.uuid == previous_potential.uuid
    assert process.ctx.inputs.parameters == {**OLD_FAST, "optimizer_options": {"c1": 0.5}}

    assert process.inspect_process().status == 0  # the same failure again: the handler's second remedy
    assert process.ctx.inputs.parameters["L2_coeffs"] == pytest.approx(1e-6)
    assert process.ctx.inputs.parameters["optimizer_options"] == {"c1": 0.5}

    result = process.handle_nonfinite_loss(node)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_NONFINITE_LOSS.status
    assert "c1 0.5" in result.exit_code.message


def test_handle_nonfinite_loss_from_scratch_with_lbfgsb(generate_process, generate_child, interim_potential):
    """A fit from scratch restarts from scratch; L-BFGS-B has no c1, so the optimiser becomes BFGS (without the
    options only L-BFGS-B knows)."""
    parameters = {**OLD_FAST, "optimizer": "L-BFGS-B", "optimizer_options": {"maxcor": 20}}
    process = generate_process(parameters=parameters)
    process.ctx.inputs.previous_potential = interim_potential
    node = generate_child(CALC_CODES.ERROR_NONFINITE_LOSS.status, parameters=parameters)
    attach(process, node)
    assert process.handle_nonfinite_loss(node).exit_code.status == 0
    assert "previous_potential" not in process.ctx.inputs
    assert process.ctx.inputs.parameters["optimizer"] == "BFGS"
    assert process.ctx.inputs.parameters["optimizer_options"] == {"c1": 0.5}  # maxcor is L-BFGS-B's


def test_handle_zero_iterations(generate_process, generate_child):
    """Zero iterations: the same inputs would fit nothing again; abort and say where to look."""
    process = generate_process()
    node = generate_child(CALC_CODES.ERROR_ZERO_ITERATIONS.status, outputs={"metrics": orm.Dict({"initial_loss": 7.0})})
    attach(process, node)
    result = process.handle_zero_iterations(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_ZERO_ITERATIONS.status
    assert "gradient tolerance" in result.exit_code.message and "loss 7.0" in result.exit_code.message
    assert process.ctx.inputs.parameters == OLD_FAST
    assert process.inspect_process().status == WORK_CODES.ERROR_ZERO_ITERATIONS.status


def test_handle_unreadable_input(generate_process, generate_child):
    """Unreadable data fail the same way on every restart: abort at once with the child's message."""
    process = generate_process()
    node = generate_child(CALC_CODES.ERROR_INPUT_UNREADABLE.status)
    child_message = CALC_CODES.ERROR_INPUT_UNREADABLE.format(message="train.xyz: structure 0 has a non-finite label")
    node.set_exit_message(child_message.message)
    attach(process, node)
    result = process.handle_unreadable_input(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_INPUT_UNREADABLE.status
    assert "non-finite label" in result.exit_code.message
    assert process.inspect_process().status == WORK_CODES.ERROR_INPUT_UNREADABLE.status


def test_unhandled_failure_is_not_restarted(generate_process, generate_child):
    """pacemaker failing (320) is no handler's business: BaseRestartWorkChain aborts."""
    process = generate_process()
    node = generate_child(CALC_CODES.ERROR_FIT_FAILED.status)
    attach(process, node)
    for handler in ("handle_out_of_walltime", "handle_interrupted", "handle_nonfinite_loss", "handle_zero_iterations"):
        assert getattr(process, handler)(node) is None
    assert process.inspect_process().status == WORK_CODES.ERROR_UNHANDLED_FAILURE.status


def test_success_finishes_the_loop(generate_process, generate_child):
    process = generate_process()
    node = generate_child(0)
    attach(process, node)
    assert process.inspect_process() is None
    assert process.ctx.is_finished


# --- protocols --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "parameters", "walltime"),
    [
        ("fast", OLD_FAST, 3600),
        ("balanced", OLD_BALANCED, 43200),
        (
            "stringent",
            {
                **OLD_BALANCED,
                "number_of_functions_per_element": 300,
                "functions": {"ALL": {"nradmax_by_orders": [15, 6, 4, 3, 2], "lmax_by_orders": [0, 3, 3, 2, 1]}},
                "maxiter": 3000,
                "warm_start_maxiter": 800,
            },
            86400,
        ),
    ],
)
def test_get_builder_from_protocol(
    fixture_code, training_set, previous_potential, generate_workchain, protocol, parameters, walltime
):
    """Each protocol builds valid inputs; fast and balanced keep the former protocols/pacemaker.yaml's values."""
    builder = PacemakerBaseWorkChain.get_builder_from_protocol(
        fixture_code(ENTRY_POINT_CALC), training_set, previous_potential=previous_potential, protocol=protocol
    )
    inputs = builder_inputs(builder)
    assert PacemakerBaseWorkChain.spec().inputs.validate(inputs) is None
    assert inputs["max_iterations"].value == 5
    assert inputs["clean_workdir"].value is False
    assert inputs["pacemaker"]["parameters"].get_dict() == parameters
    assert inputs["pacemaker"]["previous_potential"].uuid == previous_potential.uuid
    assert "test_set" not in inputs["pacemaker"]
    options = inputs["pacemaker"]["metadata"]["options"]
    assert options["max_wallclock_seconds"] == walltime
    assert options["withmpi"] is False
    assert options["resources"] == {"num_machines": 1, "num_mpiprocs_per_machine": 1}
    process = generate_workchain(ENTRY_POINT_WORK, inputs)
    process.setup()
    assert process.ctx.inputs.training_set.uuid == training_set.uuid


def test_get_builder_from_protocol_default_overrides_and_options(fixture_code, training_set, si_dft_set):
    code = fixture_code(ENTRY_POINT_CALC)
    test_set = LabelledStructuresData.from_atoms(si_dft_set[28:30])
    builder = PacemakerBaseWorkChain.get_builder_from_protocol(
        f"{code.label}@{code.computer.label}",
        training_set,
        test_set=test_set,
        overrides={"max_iterations": 2, "pacemaker": {"parameters": {"maxiter": 40}}},
        options={"max_wallclock_seconds": 600, "queue_name": "debug"},
    )
    assert PacemakerBaseWorkChain.get_default_protocol() == "fast"
    assert builder.max_iterations.value == 2
    assert builder.pacemaker.parameters.get_dict() == {**OLD_FAST, "maxiter": 40}
    assert builder.pacemaker.test_set.uuid == test_set.uuid
    assert builder.pacemaker.metadata.options.max_wallclock_seconds == 600  # `options` win over the protocol's
    assert builder.pacemaker.metadata.options.queue_name == "debug"


def test_get_builder_from_protocol_without_training_set(fixture_code, training_set):
    """A parent sets the training set itself: the builder is complete once it does."""
    builder = PacemakerBaseWorkChain.get_builder_from_protocol(fixture_code(ENTRY_POINT_CALC))
    assert "training_set" not in builder_inputs(builder)["pacemaker"]
    assert PacemakerBaseWorkChain.spec().inputs.validate(builder_inputs(builder)) is not None
    builder.pacemaker.training_set = training_set
    assert PacemakerBaseWorkChain.spec().inputs.validate(builder_inputs(builder)) is None


def test_unknown_protocol(fixture_code, training_set):
    with pytest.raises(ProtocolError, match="protocol `nonsense` is not one of"):
        PacemakerBaseWorkChain.get_builder_from_protocol(
            fixture_code(ENTRY_POINT_CALC), training_set, protocol="nonsense"
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_iteration": 3}, "`max_iteration` is not an input"),
        ({"pacemaker": {"paramters": {"maxiter": 4}}}, "`pacemaker.paramters` is not an input"),
        ({"pacemaker": {"parameters": {"maxiters": 4}}}, "unknown key `maxiters`"),
        ({"pacemaker": {"parameters": {"kappa": 3}}}, "parameters.kappa"),
        ({"pacemaker": {"metadata": {"options": {"max_walltime": 10}}}}, "max_walltime"),
    ],
)
def test_unknown_override_key(fixture_code, training_set, overrides, message):
    with pytest.raises(ValueError, match=message):
        PacemakerBaseWorkChain.get_builder_from_protocol(
            fixture_code(ENTRY_POINT_CALC), training_set, overrides=overrides
        )


# --- slow: a real fit ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_fit_through_the_wrapper(pacemaker_code, si_dft_set):
    """A tiny fit with the `fast` protocol (20 iterations) through ``aiida.engine.run``: one child, its outputs."""
    from aiida.engine import run_get_node

    training_set = LabelledStructuresData.from_atoms(si_dft_set[:12], source="dft")
    builder = PacemakerBaseWorkChain.get_builder_from_protocol(
        pacemaker_code, training_set, protocol="fast", overrides={"pacemaker": {"parameters": {"maxiter": 20}}}
    )
    outputs, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert set(outputs) == {"potential", "metrics", "learning_curve"}
    (child,) = node.called
    assert child.is_finished_ok
    assert outputs["potential"].uuid == child.outputs.potential.uuid
    assert outputs["potential"].elements == ["Si"] and outputs["potential"].has_yace
    assert 1 <= outputs["metrics"]["iterations"] <= 20
