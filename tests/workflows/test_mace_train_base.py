"""``MaceTrainBaseWorkChain``: one test per handler, the protocols, and (slow) one real run of mace_run_train."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import ProcessHandlerReport

from aiida_pyacemaker.calculations.mace_train import MaceTrainCalculation
from aiida_pyacemaker.data import LabelledStructuresData, MaceModelData
from aiida_pyacemaker.protocols import ProtocolError, builder_inputs
from aiida_pyacemaker.workflows.mace_train.base import MaceTrainBaseWorkChain

from ..conftest import TINY_SI

ENTRY_POINT_CALC = "pyacemaker.mace.train"
ENTRY_POINT_WORK = "pyacemaker.mace.train.base"
CALC_CODES = MaceTrainCalculation.exit_codes
WORK_CODES = MaceTrainBaseWorkChain.exit_codes
PARAMETERS = {"max_num_epochs": 3, "batch_size": 2, "valid_fraction": 0.2, "lr": 0.01}

#: The old protocols/mace_train.yaml sets `tiny` and `fine_tune`, which trained the committed tiny committee.
OLD_TINY = {
    "model": "MACE",
    "num_channels": 16,
    "max_L": 0,
    "r_max": 4.5,
    "num_interactions": 2,
    "correlation": 2,
    "E0s": "average",
    "loss": "weighted",
    "energy_weight": 100.0,
    "forces_weight": 10.0,
    "batch_size": 4,
    "max_num_epochs": 100,
    "lr": 0.01,
    "default_dtype": "float64",
    "device": "cpu",
    "valid_fraction": 0.15,
}
OLD_FINE_TUNE = {
    "E0s": "average",
    "loss": "weighted",
    "energy_weight": 10.0,
    "forces_weight": 100.0,
    "batch_size": 4,
    "max_num_epochs": 15,
    "lr": 0.005,
    "default_dtype": "float64",
    "device": "cpu",
    "valid_fraction": 0.2,
    "multiheads_finetuning": False,
}


@pytest.fixture
def training_set(si_dft_set) -> LabelledStructuresData:
    return LabelledStructuresData.from_atoms(si_dft_set[:5], source="dft")


@pytest.fixture
def foundation_model() -> MaceModelData:
    return MaceModelData.from_file(TINY_SI / "mace_si_tiny_s0.model")


@pytest.fixture
def generate_process(generate_workchain, fixture_code, training_set):
    """A set-up wrapper (``setup`` ran, ``ctx.inputs`` filled) ready for a handler."""

    def factory(parameters: dict | None = None, **extra) -> MaceTrainBaseWorkChain:
        mace_train = {
            "code": fixture_code(ENTRY_POINT_CALC),
            "training_set": training_set,
            "parameters": orm.Dict(parameters or PARAMETERS),
            **extra,
        }
        process = generate_workchain(ENTRY_POINT_WORK, {"mace_train": mace_train})
        process.setup()
        return process

    return factory


def attach(process: MaceTrainBaseWorkChain, *nodes) -> None:
    """Make ``nodes`` the children of the iterations so far, as ``run_process`` would."""
    process.ctx.children = list(nodes)
    process.ctx.iteration = len(nodes)


def walltime_child(failed_child, epochs: dict[str, int], models: tuple[str, ...] = ()):
    """A child killed for its walltime that finished ``epochs`` per seed key and wrote ``models``."""
    outputs: dict = {"metrics": orm.Dict({key: {"epochs": value, "diverged": False} for key, value in epochs.items()})}
    for key in models:
        outputs[f"models__{key}"] = MaceModelData.from_file(TINY_SI / "mace_si_tiny_s0.model", deduplicate=False)
    return failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_OUT_OF_WALLTIME.status, outputs=outputs)


# --- setup ------------------------------------------------------------------------------------------------------------


def test_setup(generate_process):
    process = generate_process()
    assert process.ctx.inputs.parameters == PARAMETERS
    assert isinstance(process.ctx.inputs.parameters, dict)
    assert process.ctx.lr_halvings == 0


def test_default_lr_is_that_of_mace_run_train():
    """The handler halves mace_run_train's own default when parameters.lr is not given."""
    from mace.tools.arg_parser import build_default_arg_parser

    assert MaceTrainBaseWorkChain.defaults.lr == build_default_arg_parser().get_default("lr")


# --- handlers ---------------------------------------------------------------------------------------------------------


def test_handle_out_of_walltime(generate_process, failed_child):
    """Killed by the scheduler: continue from the child's checkpoints (parent_folder + restart_latest)."""
    process = generate_process()
    node = walltime_child(failed_child, {"s0": 2})
    attach(process, node)
    result = process.handle_out_of_walltime(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.parent_folder.uuid == node.outputs.remote_folder.uuid
    assert process.ctx.inputs.parameters == {**PARAMETERS, "restart_latest": True}
    process = generate_process()  # the same through the loop's inspection
    attach(process, node)
    assert process.inspect_process().status == 0  # handled: the loop runs again
    assert not process.ctx.is_finished
    assert process.ctx.inputs.parameters["restart_latest"] is True


def test_handle_out_of_walltime_twice_with_progress(generate_process, failed_child):
    """The second kill continues from the second job's checkpoints, as the seed made progress."""
    process = generate_process()
    first = walltime_child(failed_child, {"s0": 2})
    attach(process, first)
    process.handle_out_of_walltime(first)
    second = walltime_child(failed_child, {"s0": 2}, models=("s0",))  # no new epoch, but the model was written
    attach(process, first, second)
    assert process.handle_out_of_walltime(second).exit_code.status == 0
    assert process.ctx.inputs.parent_folder.uuid == second.outputs.remote_folder.uuid


@pytest.mark.parametrize("previous", [None, {"s0": 2}])
def test_handle_out_of_walltime_without_progress(generate_process, failed_child, previous):
    """No epoch finished (first job), or nothing new since the last restart: abort rather than loop."""
    process = generate_process()
    nodes = []
    if previous is not None:
        nodes.append(walltime_child(failed_child, previous))
        attach(process, *nodes)
        process.handle_out_of_walltime(nodes[-1])
    nodes.append(walltime_child(failed_child, previous or {"s0": 0}))
    attach(process, *nodes)
    result = process.handle_out_of_walltime(nodes[-1])
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_OUT_OF_WALLTIME_NO_PROGRESS.status
    assert process.inspect_process().status == WORK_CODES.ERROR_OUT_OF_WALLTIME_NO_PROGRESS.status


def test_handle_training_diverged(generate_process, failed_child):
    """NaN loss: start again from the same start with the learning rate halved."""
    process = generate_process()
    node = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_TRAINING_DIVERGED.status)
    attach(process, node)
    result = process.handle_training_diverged(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == 0
    assert process.ctx.inputs.parameters == {**PARAMETERS, "lr": 0.005}
    assert process.ctx.inputs.seeds.get_list() == [0]  # seeds (and the output keys s<seed>) never change
    assert process.inspect_process().status == 0


def test_handle_training_diverged_without_lr_halves_the_default(generate_process, failed_child):
    parameters = {key: value for key, value in PARAMETERS.items() if key != "lr"}
    process = generate_process(parameters=parameters)
    node = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_TRAINING_DIVERGED.status)
    attach(process, node)
    process.handle_training_diverged(node)
    assert process.ctx.inputs.parameters["lr"] == MaceTrainBaseWorkChain.defaults.lr / 2


def test_handle_training_diverged_after_a_walltime_restart_starts_from_scratch(generate_process, failed_child):
    """A restart from checkpoints that diverges starts again from the start, not from the diverging checkpoint."""
    process = generate_process()
    killed = walltime_child(failed_child, {"s0": 2})
    attach(process, killed)
    process.handle_out_of_walltime(killed)
    diverged = failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_TRAINING_DIVERGED.status)
    attach(process, killed, diverged)
    assert process.handle_training_diverged(diverged).exit_code.status == 0
    assert "parent_folder" not in process.ctx.inputs
    assert process.ctx.inputs.parameters == {**PARAMETERS, "lr": 0.005}
    assert process.ctx.training_state == {}


def test_handle_training_diverged_gives_up(generate_process, failed_child):
    """After ``max_lr_halvings`` halvings the wrapper aborts with its own exit code."""
    process = generate_process()
    halvings = MaceTrainBaseWorkChain.defaults.max_lr_halvings
    nodes = []
    for _ in range(halvings):
        nodes.append(failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_TRAINING_DIVERGED.status))
        attach(process, *nodes)
        assert process.handle_training_diverged(nodes[-1]).exit_code.status == 0
    assert process.ctx.inputs.parameters["lr"] == pytest.approx(0.01 / 2**halvings)
    nodes.append(failed_child(ENTRY_POINT_CALC, CALC_CODES.ERROR_TRAINING_DIVERGED.status))
    attach(process, *nodes)
    result = process.handle_training_diverged(nodes[-1])
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_TRAINING_DIVERGED.status
    assert f"halved {halvings} times" in result.exit_code.message


@pytest.mark.parametrize("exit_code", [CALC_CODES.ERROR_MODEL_MISSING, CALC_CODES.ERROR_METRICS_MISSING])
def test_handle_known_unrecoverable_failure(generate_process, failed_child, exit_code):
    """mace_run_train crashed: the same inputs crash again, abort with the wrapper's code."""
    process = generate_process()
    node = failed_child(ENTRY_POINT_CALC, exit_code.status)
    attach(process, node)
    result = process.handle_known_unrecoverable_failure(node)
    assert isinstance(result, ProcessHandlerReport)
    assert result.do_break
    assert result.exit_code.status == WORK_CODES.ERROR_KNOWN_UNRECOVERABLE_FAILURE.status
    assert process.inspect_process().status == WORK_CODES.ERROR_KNOWN_UNRECOVERABLE_FAILURE.status


def test_inspect_process_success_and_unhandled(generate_process, failed_child):
    process = generate_process()
    attach(process, failed_child(ENTRY_POINT_CALC, 0))
    assert process.inspect_process() is None
    assert process.ctx.is_finished
    process = generate_process()
    attach(process, failed_child(ENTRY_POINT_CALC, 110))  # out of memory: no handler
    assert process.inspect_process().status == WORK_CODES.ERROR_UNHANDLED_FAILURE.status


# --- protocols --------------------------------------------------------------------------------------------------------


def test_protocols_are_available():
    assert set(MaceTrainBaseWorkChain.get_available_protocols()) == {"fast", "balanced", "stringent"}
    assert MaceTrainBaseWorkChain.get_default_protocol() == "fast"


def test_fast_is_the_old_tiny_and_fine_tune_sets():
    """The committed tiny committee was trained with these values: `fast` keeps them exactly."""
    inputs = MaceTrainBaseWorkChain.get_protocol_inputs("fast")
    assert inputs["mace_train"]["parameters"] == OLD_TINY
    assert inputs["fine_tune_parameters"] == OLD_FINE_TUNE


@pytest.mark.parametrize("protocol", ["fast", "balanced", "stringent"])
@pytest.mark.parametrize("fine_tune", [False, True], ids=["scratch", "fine_tune"])
def test_get_builder_from_protocol(fixture_code, training_set, foundation_model, protocol, fine_tune, data_regression):
    builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
        fixture_code(ENTRY_POINT_CALC),
        training_set,
        foundation_model=foundation_model if fine_tune else None,
        protocol=protocol,
    )
    inputs = builder_inputs(builder)
    assert MaceTrainBaseWorkChain.spec().inputs.validate(inputs) is None
    assert ("foundation_model" in inputs["mace_train"]) is fine_tune
    data_regression.check(
        {
            "max_iterations": inputs["max_iterations"].value,
            "clean_workdir": inputs["clean_workdir"].value,
            "seeds": inputs["mace_train"]["seeds"].get_list(),
            "parameters": inputs["mace_train"]["parameters"].get_dict(),
            "options": inputs["mace_train"]["metadata"]["options"],
        }
    )


def test_get_builder_from_protocol_without_training_set(fixture_code, training_set):
    """A parent sets the training set later: the builder is complete but for it."""
    builder = MaceTrainBaseWorkChain.get_builder_from_protocol(fixture_code(ENTRY_POINT_CALC), protocol="fast")
    inputs = builder_inputs(builder)
    assert "training_set" not in inputs["mace_train"]
    assert "training_set" in str(MaceTrainBaseWorkChain.spec().inputs.validate(inputs))
    builder.mace_train.training_set = training_set
    assert MaceTrainBaseWorkChain.spec().inputs.validate(builder_inputs(builder)) is None


def test_get_builder_from_protocol_overrides_and_options(fixture_code, training_set, foundation_model):
    """Overrides of mace_train.parameters apply to the fine-tuning set too; options merge into the metadata."""
    overrides = {
        "max_iterations": 2,
        "mace_train": {"seeds": [3, 4], "parameters": {"max_num_epochs": 7}},
        "fine_tune_parameters": {"lr": 0.001},
    }
    builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
        fixture_code(ENTRY_POINT_CALC),
        training_set,
        foundation_model=foundation_model,
        protocol="fast",
        overrides=overrides,
        options={"max_wallclock_seconds": 60, "queue_name": "debug"},
    )
    assert builder.max_iterations.value == 2
    assert builder.mace_train.seeds.get_list() == [3, 4]
    assert builder.mace_train.parameters.get_dict() == {**OLD_FINE_TUNE, "max_num_epochs": 7, "lr": 0.001}
    options = builder.mace_train.metadata.options
    assert (options.max_wallclock_seconds, options.queue_name, options.resources["num_machines"]) == (60, "debug", 1)


def test_get_builder_from_protocol_unknown_protocol(fixture_code):
    with pytest.raises(ProtocolError, match="`ultra` is not one of"):
        MaceTrainBaseWorkChain.get_builder_from_protocol(fixture_code(ENTRY_POINT_CALC), protocol="ultra")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"max_iteration": 3}, "max_iteration"),
        ({"mace_train": {"paramters": {"lr": 0.1}}}, "mace_train.paramters"),
    ],
)
def test_get_builder_from_protocol_unknown_override(fixture_code, overrides, key):
    with pytest.raises(ProtocolError, match=f"`{key}` is not an input"):
        MaceTrainBaseWorkChain.get_builder_from_protocol(fixture_code(ENTRY_POINT_CALC), overrides=overrides)


# --- a real run -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_run_fast_protocol(mace_train_code, si_dft_set):
    """The `fast` protocol, two epochs, two seeds: the wrapper returns both models and the metrics."""
    from aiida.engine import run_get_node

    builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
        mace_train_code,
        LabelledStructuresData.from_atoms(si_dft_set[:12], source="dft"),
        protocol="fast",
        overrides={"mace_train": {"seeds": [0, 1], "parameters": {"max_num_epochs": 2}}},
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert set(node.outputs.models) == {"s0", "s1"}
    assert node.outputs.models.s0.r_max == 4.5
    assert node.outputs.metrics["s1"]["epochs"] == 2
    (child,) = node.called
    assert child.process_class is MaceTrainCalculation and child.is_finished_ok
