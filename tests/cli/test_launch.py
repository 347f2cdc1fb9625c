"""``distil --wait`` streams the report lines of the loop and its children as they appear."""

from __future__ import annotations

from aiida import orm
from aiida.common.links import LinkType

from aiida_pyacemaker.cli.launch import new_report_lines


def test_report_lines_of_a_process_and_its_children_arrive_once_in_order():
    parent = orm.WorkflowNode()
    parent.set_process_label("DistillationWorkChain")
    parent.store()
    child = orm.WorkflowNode()
    child.set_process_label("TieredOracleWorkChain")
    child.base.links.add_incoming(parent, link_type=LinkType.CALL_WORK, link_label="o")
    child.store()
    parent.logger.report("iteration 0: 30 structures (Phase 1: candidate pool)")
    child.logger.report("routes after the MACE tier: {'mace': 22, 'dft': 3}")
    child.logger.info("not a report line")

    lines, last = new_report_lines(parent, 0)
    assert lines == [
        f"DistillationWorkChain<{parent.pk}>: iteration 0: 30 structures (Phase 1: candidate pool)",
        f"TieredOracleWorkChain<{child.pk}>: routes after the MACE tier: {{'mace': 22, 'dft': 3}}",
    ]
    assert new_report_lines(parent, last) == ([], last)  # nothing is printed twice
    parent.logger.report("stop: max_iterations (2) reached")
    lines, _ = new_report_lines(parent, last)
    assert lines == [f"DistillationWorkChain<{parent.pk}>: stop: max_iterations (2) reached"]
