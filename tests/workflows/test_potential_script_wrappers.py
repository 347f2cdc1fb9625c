"""``AceMdBaseWorkChain`` and ``EvaluateBaseWorkChain`` (``PotentialScriptWrapper``): one test per handler for both
wrappers, their protocols, and (slow, daemon) a real exploration."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.engine import ProcessHandlerReport
from ase.build import bulk

from aiida_pyacemaker.data import StructureSetData
from aiida_pyacemaker.protocols import builder_inputs
from aiida_pyacemaker.workflows.ace_md.base import AceMdBaseWorkChain
from aiida_pyacemaker.workflows.evaluate.base import EvaluateBaseWorkChain

#: (CalcJob entry point, wrapper entry point, namespace)
WRAPPERS = [
    ("pyacemaker.ace.md", "pyacemaker.ace.md.base", "md"),
    ("pyacemaker.evaluate", "pyacemaker.evaluate.base", "evaluate"),
]


@pytest.fixture
def generate_process(generate_workchain, fixture_code, si_ace_potential):
    def factory(calculation: str, wrapper: str, namespace: str, options: dict | None = None):
        structures = StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43, cubic=True)])
        structures.set_array("relax", np.array([True]))
        inputs = {"code": fixture_code(calculation), "potential": si_ace_potential, "structure_set": structures}
        if options is not None:
            inputs["metadata"] = {"options": options}
        process = generate_workchain(wrapper, {namespace: inputs})
        process.setup()
        return process

    return factory


def attach(process, node) -> None:
    process.ctx.children = [node]
    process.ctx.iteration = 1


@pytest.mark.parametrize(("calculation", "wrapper", "namespace"), WRAPPERS)
@pytest.mark.parametrize(
    ("handler", "status", "label"),
    [
        ("handle_potential_unreadable", 310, "ERROR_POTENTIAL_UNREADABLE"),
        ("handle_input_unreadable", 311, "ERROR_INPUT_UNREADABLE"),
    ],
)
def test_unreadable_inputs_abort_at_once(
    generate_process, failed_child, calculation, wrapper, namespace, handler, status, label
):
    process = generate_process(calculation, wrapper, namespace)
    node = failed_child(calculation, status)
    node.set_exit_message("potential.yaml: yaml-cpp: error at line 2")
    attach(process, node)
    result = getattr(process, handler)(node)
    assert isinstance(result, ProcessHandlerReport) and result.do_break
    assert result.exit_code.status == process.exit_codes[label].status == status
    assert "yaml-cpp: error at line 2" in result.exit_code.message
    assert process.inspect_process().status == status


@pytest.mark.parametrize(("calculation", "wrapper", "namespace"), WRAPPERS)
@pytest.mark.parametrize("status", [400, 120])
def test_out_of_walltime_doubles_the_walltime(generate_process, failed_child, calculation, wrapper, namespace, status):
    process = generate_process(calculation, wrapper, namespace, options={"max_wallclock_seconds": 600})
    node = failed_child(calculation, status)
    attach(process, node)
    result = process.handle_out_of_walltime(node)
    assert isinstance(result, ProcessHandlerReport) and result.exit_code.status == 0
    assert process.ctx.inputs.metadata.options.max_wallclock_seconds == 1200
    assert process.inspect_process().status == 0  # handled: restarts


@pytest.mark.parametrize(("calculation", "wrapper", "namespace"), WRAPPERS)
def test_out_of_memory_is_not_restarted(generate_process, failed_child, calculation, wrapper, namespace):
    process = generate_process(calculation, wrapper, namespace)
    node = failed_child(calculation, 410)
    attach(process, node)
    assert process.inspect_process().status == process.exit_codes.ERROR_UNHANDLED_FAILURE.status


@pytest.mark.parametrize(
    ("protocol", "steps", "temperatures"),
    [("fast", 1500, [600.0, 1200.0]), ("balanced", 10000, [300.0, 900.0, 1500.0])],
)
def test_ace_md_builder_from_protocol(fixture_code, si_ace_potential, protocol, steps, temperatures):
    builder = AceMdBaseWorkChain.get_builder_from_protocol(
        fixture_code("pyacemaker.ace.md"),
        si_ace_potential,
        protocol=protocol,
        overrides={"md": {"parameters": {"seed": 3}}},
    )
    parameters = builder.md.parameters.get_dict()
    assert parameters["steps"] == steps and parameters["temperatures"] == temperatures and parameters["seed"] == 3
    assert builder.md.potential.uuid == si_ace_potential.uuid


def test_evaluate_builder_from_protocol(fixture_code, foundation_model):
    builder = EvaluateBaseWorkChain.get_builder_from_protocol(
        fixture_code("pyacemaker.evaluate"), foundation_model, protocol="stringent"
    )
    assert builder.evaluate.parameters.get_dict()["fmax"] == 0.001
    assert "structure_set" not in builder_inputs(builder)["evaluate"]


@pytest.mark.slow
@pytest.mark.daemon
def test_exploration_on_the_daemon_selects_extrapolating_frames(si_ace_potential, ace_md_code, submit_and_await):
    """A real ``AceMdBaseWorkChain`` on the daemon: hot MD with the small Si potential leaves its training domain;
    the selected frames lie between gamma_select and gamma_stop, at most max_selected of them."""
    code = ace_md_code
    overrides = {
        "md": {
            "parameters": {
                "temperatures": [1800.0],
                "steps": 400,
                "gamma_select": 1.1,
                "gamma_stop": 4.0,
                "max_selected": 3,
            }
        }
    }
    builder = AceMdBaseWorkChain.get_builder_from_protocol(
        code,
        si_ace_potential,
        StructureSetData.from_atoms([bulk("Si", "diamond", a=5.43, cubic=True)]),
        overrides=overrides,
    )
    node = submit_and_await(builder, timeout=600)
    assert node.is_finished_ok, node.exit_message
    (record,) = node.outputs.summary["trajectories"]
    assert record["atoms"] == 16 and record["max_gamma"] > 1.1  # the fast protocol: start cells to 16 atoms
    selected = node.outputs.selected
    assert 1 <= len(selected) <= 3
    assert ((selected.get_array("gamma") >= 1.1) & (selected.get_array("gamma") < 4.0)).all()
