"""Protocols the AiiDA way: every process offers fast, balanced, stringent; YAML keys mirror the ports."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.plugins import WorkflowFactory

from aiida_pyacemaker.protocols import ProtocolError, as_input_nodes, check_override_keys, recursive_merge

PROCESSES = (
    "pyacemaker.mace.base",
    "pyacemaker.mace.train.base",
    "pyacemaker.pacemaker.base",
    "pyacemaker.tiered_oracle",
    "pyacemaker.incremental_training",
    "pyacemaker.distillation",
    "pyacemaker.ace.md.base",
    "pyacemaker.evaluate.base",
    "pyacemaker.validation",
)
#: Children whose own protocols a parent's YAML overrides under these keys.
CHILD_NAMESPACES = {"mace", "mace_train", "pacemaker", "dft", "oracle", "training", "fine_tune"}


@pytest.mark.parametrize("entry_point", PROCESSES)
def test_every_process_has_the_three_protocols_and_its_yaml_mirrors_the_ports(entry_point):
    process = WorkflowFactory(entry_point)
    assert hasattr(process, "get_builder_from_protocol")
    assert set(process.get_available_protocols()) == {"fast", "balanced", "stringent"}
    assert process.get_default_protocol() == "fast"
    for protocol in ("fast", "balanced", "stringent"):
        inputs = process.get_protocol_inputs(protocol)
        check_override_keys(process.spec().inputs, inputs)  # raises on a key that is no port


def test_plain_values_become_the_nodes_the_ports_take():
    from aiida_pyacemaker.workflows.incremental_training import IncrementalTrainingWorkChain

    ports = IncrementalTrainingWorkChain.spec().inputs
    converted = as_input_nodes(ports, {"replay_buffer_size": 10, "min_replay_share": 1, "replay_strategy": "dopt"})
    assert isinstance(converted["replay_buffer_size"], orm.Int) and converted["replay_buffer_size"].value == 10
    assert isinstance(converted["min_replay_share"], orm.Float)  # an integer where a Float is expected
    assert isinstance(converted["replay_strategy"], orm.Str)
    with pytest.raises(ProtocolError, match="`replay_buffer_size` = 'big' does not fit the port"):
        as_input_nodes(ports, {"replay_buffer_size": "big"})
    with pytest.raises(ProtocolError, match=r"`pacemaker.pacemaker.parameter` is not an input; allowed here"):
        check_override_keys(ports, {"pacemaker": {"pacemaker": {"parameter": {}}}})


def test_overrides_merge_recursively():
    merged = recursive_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3}
