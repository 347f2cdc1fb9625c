"""``MaceBaseWorkChain``: one test per handler, the protocols, and (slow) one real run with the tiny committee."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessHandlerReport

from aiida_pyacemaker.calculations.mace import DEFAULT_PARAMETERS, MaceCalculation
from aiida_pyacemaker.data import StructureSetData
from aiida_pyacemaker.protocols import ProtocolError, builder_inputs
from aiida_pyacemaker.workflows.mace.base import MaceBaseWorkChain

ENTRY_POINT_CALC = "pyacemaker.mace"
ENTRY_POINT_WORK = "pyacemaker.mace.base"
CALC_CODES = MaceCalculation.exit_codes
WORK_CODES = MaceBaseWorkChain.exit_codes


@pytest.fixture
def structure_set(generate_structure):
    return StructureSetData.from_structures([generate_structure("si2", seed=0), generate_structure("si2", seed=1)])


@pytest.fixture
def generate_inputs(fixture_code, tiny_committee, structure_set):
    """Inputs of the wrapper: the ``mace`` namespace with ``parameters`` and ``options`` as given."""

    def factory(parameters: dict | None = None, options: dict | None = None) -> dict:
        mace = {"code": fixture_code(ENTRY_POINT_CALC), "models": tiny_committee, "structure_set": structure_set}
        if parameters is not None:
            mace["parameters"] = orm.Dict(parameters)
        if options is not None:
            mace["metadata"] = {"options": options}
        return {"mace": mace}

    return factory


@pytest.fixture
def generate_process(generate_workchain, generate_inputs):
    """A set-up wrapper (``setup`` ran, ``ctx.inputs`` filled) ready for a handler."""

    def factory(parameters: dict | None = None, options: dict | None = None) -> MaceBaseWorkChain:
        process = generate_workchain(ENTRY_POINT_WORK, generate_inputs(parameters, options))
        process.setup()
        return process

    return factory


def attach(process: MaceBaseWorkChain, node) -> None:
    """Make ``node`` the child of the first iteration, as ``run_process`` would."""
    process.ctx.children = [node]
    process.ctx.iteration = 1


# --- setup ------------------------------------------------------------------------------------------------------------


def test_setup_fills_the_parameter_defaults(generate_process):
    process = generate_process(parameters={"batch_size": 4})
    assert process.ctx.inputs.parameters == {**DEFAULT_PARAMETERS, "batch_size": 4}
    assert isinstance(process.ctx.inputs.parameters, dict)
    assert "structure_set" in process.ctx.inputs and "models" in process.ctx.inputs


def test_structures_nodes_work_through_the_exposed_namespace(
    generate_workchain, fixture_code, tiny_committee, generate_structure, structure_set
):
    structures = {"a": generate_structure("si2", seed=0)}
    inputs = {"mace": {"code": fixture_code(ENTRY_POINT_CALC), "models": tiny_committee, "structures": structures}}
    process = generate_workchain(ENTRY_POINT_WORK, inputs)
    process.setup()
    assert process.ctx.inputs.structures["a"].uuid == structures["a"].uuid
    inputs["mace"]["structure_set"] = structure_set
    with pytest.raises(ValueError, match="either as `structures`"):
        generate_workchain(ENTRY_POINT_WORK, inputs)


# --- handlers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exit_status", [CALC_CODES.ERROR_OUT_OF_MEMORY.status, 110])
def test_handle_out_of_memory(generate_process, failed_child, exit_status):
    """Out of memory (the parser's 410, or the scheduler's 110 unmapped): halve both batch limits, restart."""
    process = generate_process()
    node = failed_child(ENTRY_POINT_CALC, exit_status)
    attach(process, node)
    result = process.handle_out_of_memory(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.parameters["batch_size"] == DEFAULT_PARAMETERS["batch_size"] // 2
    assert process.ctx.inputs.parameters["max_batch_atoms"] == DEFAULT_PARAMETERS["max_batch_atoms"] // 2
    result = process.inspect_process()
    assert result.status == 0  # a handler dealt with it: the loop runs again
    assert not process.ctx.is_finished


def test_handle_out_of_memory_halves_down_to_one(generate_process, failed_child):
    process = generate_process(parameters={"batch_size": 3, "max_batch_atoms": 3})
    node = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_OUT_OF_MEMORY.status)
    attach(process, node)
    assert process.handle_out_of_memory(node).exit_code.status == 0
    assert (process.ctx.inputs.parameters["batch_size"], process.ctx.inputs.parameters["max_batch_atoms"]) == (1, 1)


@pytest.mark.parametrize(("batch_size", "max_batch_atoms"), [(1, 1), (1, 64), (8, 1)])
def test_handle_out_of_memory_at_one_structure_per_batch(generate_process, failed_child, batch_size, max_batch_atoms):
    """One structure per batch already (either limit at 1): nothing smaller to try, abort with the wrapper's code."""
    process = generate_process(parameters={"batch_size": batch_size, "max_batch_atoms": max_batch_atoms})
    node = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_OUT_OF_MEMORY.status)
    attach(process, node)
    result = process.handle_out_of_memory(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_OUT_OF_MEMORY_SINGLE_STRUCTURE.status
    assert process.ctx.inputs.parameters["batch_size"] == batch_size
    assert process.inspect_process().status == WORK_CODES.ERROR_OUT_OF_MEMORY_SINGLE_STRUCTURE.status


@pytest.mark.parametrize("exit_status", [CALC_CODES.ERROR_OUT_OF_WALLTIME.status, 120])
def test_handle_out_of_walltime(generate_process, failed_child, exit_status):
    """Out of walltime: no checkpoint to continue from, so rerun with doubled walltime; parameters untouched."""
    process = generate_process(options={"max_wallclock_seconds": 1800})
    node = failed_child(ENTRY_POINT_CALC, exit_status)
    attach(process, node)
    result = process.handle_out_of_walltime(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.metadata.options.max_wallclock_seconds == 3600
    assert process.ctx.inputs.parameters == DEFAULT_PARAMETERS
    assert process.inspect_process().status == 0


def test_handle_out_of_walltime_takes_the_walltime_of_the_failed_job(generate_process, failed_child):
    """No walltime in the inputs (the computer's default applied): double the one the failed job ran with."""
    process = generate_process()
    assert "max_wallclock_seconds" not in process.ctx.inputs.metadata.options
    node = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_OUT_OF_WALLTIME.status)
    assert node.get_option("max_wallclock_seconds") == 1800
    attach(process, node)
    process.handle_out_of_walltime(node)
    assert process.ctx.inputs.metadata.options.max_wallclock_seconds == 3600


@pytest.mark.parametrize(
    ("handler", "exit_code", "wrapper_exit_code"),
    [
        ("handle_model_unreadable", CALC_CODES.ERROR_MODEL_UNREADABLE, WORK_CODES.ERROR_MODEL_UNREADABLE),
        ("handle_input_unreadable", CALC_CODES.ERROR_INPUT_UNREADABLE, WORK_CODES.ERROR_INPUT_UNREADABLE),
    ],
)
def test_unrecoverable_failures_abort_at_once(generate_process, failed_child, handler, exit_code, wrapper_exit_code):
    """A broken model or structures file fails the same way on every restart: abort with the child's message."""
    process = generate_process()
    node = failed_child(ENTRY_POINT_CALC, exit_code.status)
    child_message = exit_code.format(message="model_m1.model: UnpicklingError: could not find MARK").message
    node.set_exit_message(child_message)
    attach(process, node)
    before = AttributeDict(process.ctx.inputs.parameters)
    result = getattr(process, handler)(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == wrapper_exit_code.status
    assert child_message in result.exit_code.message
    assert process.ctx.inputs.parameters == before
    assert process.inspect_process().status == wrapper_exit_code.status


def test_unhandled_failure_is_not_restarted(generate_process, failed_child):
    """No results file without a kill signature (300): no handler claims it, BaseRestartWorkChain aborts."""
    process = generate_process()
    node = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_OUTPUT_MISSING.status)
    attach(process, node)
    assert process.handle_out_of_memory(node) is None
    assert process.handle_out_of_walltime(node) is None
    assert process.inspect_process().status == WORK_CODES.ERROR_UNHANDLED_FAILURE.status


def test_success_finishes_the_loop(generate_process, failed_child):
    process = generate_process()
    node = failed_child(ENTRY_POINT_CALC, 0)
    attach(process, node)
    assert process.inspect_process() is None
    assert process.ctx.is_finished


# --- protocols --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "max_iterations", "walltime"), [("fast", 3, 1800), ("balanced", 5, 3600), ("stringent", 8, 14400)]
)
def test_get_builder_from_protocol(
    fixture_code, tiny_committee, structure_set, generate_workchain, protocol, max_iterations, walltime
):
    builder = MaceBaseWorkChain.get_builder_from_protocol(
        fixture_code(ENTRY_POINT_CALC), tiny_committee, structure_set, protocol=protocol
    )
    inputs = builder_inputs(builder)
    assert MaceBaseWorkChain.spec().inputs.validate(inputs) is None
    assert inputs["max_iterations"].value == max_iterations
    assert inputs["clean_workdir"].value is False
    assert inputs["mace"]["parameters"].get_dict() == DEFAULT_PARAMETERS  # the YAML mirrors the CalcJob's defaults
    options = inputs["mace"]["metadata"]["options"]
    assert options["max_wallclock_seconds"] == walltime
    assert options["withmpi"] is False
    assert options["resources"] == {"num_machines": 1, "num_mpiprocs_per_machine": 1}
    process = generate_workchain(ENTRY_POINT_WORK, inputs)
    process.setup()
    assert process.ctx.inputs.structure_set.uuid == structure_set.uuid


def test_get_builder_from_protocol_default_overrides_and_options(fixture_code, tiny_committee, structure_set):
    overrides = {"max_iterations": 2, "mace": {"parameters": {"batch_size": 4}}}
    code = fixture_code(ENTRY_POINT_CALC)
    builder = MaceBaseWorkChain.get_builder_from_protocol(
        f"{code.label}@{code.computer.label}",
        tiny_committee,
        structure_set,
        overrides=overrides,
        options={"max_wallclock_seconds": 600, "queue_name": "debug"},
    )
    assert MaceBaseWorkChain.get_default_protocol() == "fast"
    assert builder.max_iterations.value == 2
    assert builder.mace.parameters.get_dict() == {**DEFAULT_PARAMETERS, "batch_size": 4}
    assert builder.mace.metadata.options.max_wallclock_seconds == 600  # `options` win over the protocol's 1800
    assert builder.mace.metadata.options.queue_name == "debug"
    assert builder.mace.metadata.options.withmpi is False


def test_get_builder_from_protocol_without_structures(fixture_code, tiny_committee, structure_set):
    """A parent sets the structures per chunk itself: the builder is complete once it does."""
    builder = MaceBaseWorkChain.get_builder_from_protocol(fixture_code(ENTRY_POINT_CALC), tiny_committee)
    assert "structure_set" not in builder_inputs(builder)["mace"]
    error = MaceBaseWorkChain.spec().inputs.validate(builder_inputs(builder))
    assert error is not None and "either as `structures`" in error.message
    builder.mace.structure_set = structure_set
    assert MaceBaseWorkChain.spec().inputs.validate(builder_inputs(builder)) is None


def test_unknown_protocol(fixture_code, tiny_committee, structure_set):
    with pytest.raises(ProtocolError, match="protocol `nonsense` is not one of"):
        MaceBaseWorkChain.get_builder_from_protocol(
            fixture_code(ENTRY_POINT_CALC), tiny_committee, structure_set, protocol="nonsense"
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_iteration": 3}, "`max_iteration` is not an input"),
        ({"mace": {"paramters": {"batch_size": 4}}}, "`mace.paramters` is not an input"),
        ({"mace": {"parameters": {"batch_sise": 4}}}, "unknown key `batch_sise`"),
        ({"mace": {"metadata": {"options": {"max_walltime": 10}}}}, "max_walltime"),
    ],
)
def test_unknown_override_key(fixture_code, tiny_committee, structure_set, overrides, message):
    with pytest.raises(ValueError, match=message):
        MaceBaseWorkChain.get_builder_from_protocol(
            fixture_code(ENTRY_POINT_CALC), tiny_committee, structure_set, overrides=overrides
        )


# --- slow: the real committee -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_run_with_the_tiny_committee(mace_code, tiny_committee, structure_set):
    from aiida.engine import run_get_node

    builder = MaceBaseWorkChain.get_builder_from_protocol(mace_code, tiny_committee, structure_set, protocol="fast")
    outputs, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    results = outputs["results"]
    assert results.status_counts == {"ok": 2}
    assert len(results) == len(structure_set)
    (child,) = node.called
    assert child.base.links.get_incoming().get_node_by_label("structure_set").uuid == structure_set.uuid
    assert child.inputs.parameters.get_dict() == DEFAULT_PARAMETERS
    assert results.uuid == child.outputs.results.uuid
