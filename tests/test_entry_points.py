"""The plugin's entry points are visible to AiiDA (``verdi plugin list``) and load."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiida.plugins import CalculationFactory, DataFactory, ParserFactory, WorkflowFactory

CALCULATIONS = (
    "pyacemaker.mace",
    "pyacemaker.mace.train",
    "pyacemaker.pacemaker",
    "pyacemaker.ace.md",
    "pyacemaker.evaluate",
)
#: Every CalcJob has a restart wrapper that the other work chains call.
WRAPPERS = {
    "pyacemaker.mace": "pyacemaker.mace.base",
    "pyacemaker.mace.train": "pyacemaker.mace.train.base",
    "pyacemaker.pacemaker": "pyacemaker.pacemaker.base",
    "pyacemaker.ace.md": "pyacemaker.ace.md.base",
    "pyacemaker.evaluate": "pyacemaker.evaluate.base",
}
WORKFLOWS = (
    *WRAPPERS.values(),
    "pyacemaker.tiered_oracle",
    "pyacemaker.incremental_training",
    "pyacemaker.distillation",
    "pyacemaker.validation",
)
DATA = (
    "pyacemaker.mace.model",
    "pyacemaker.mace.results",
    "pyacemaker.structure_set",
    "pyacemaker.labelled_structures",
    "pyacemaker.ace.potential",
)


def verdi_plugin_list(group: str) -> str:
    command = [sys.executable, "-m", "aiida", "plugin", "list", group]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", CALCULATIONS)
def test_calculation_and_parser_load(name):
    assert CalculationFactory(name).__name__.endswith("Calculation")
    assert ParserFactory(name).__name__.endswith("Parser")


@pytest.mark.parametrize("name", DATA)
def test_data_types_load(name):
    assert DataFactory(name).__name__.endswith("Data")


@pytest.mark.parametrize(("calculation", "wrapper"), sorted(WRAPPERS.items()))
def test_every_calcjob_has_a_restart_wrapper(calculation, wrapper):
    from aiida.engine import BaseRestartWorkChain

    process = WorkflowFactory(wrapper)
    assert issubclass(process, BaseRestartWorkChain)
    assert process._process_class is CalculationFactory(calculation)
    assert any(name.startswith("handle_") for name in dir(process))


def test_verdi_plugin_list_shows_the_calculations_and_the_work_chains():
    calculations = verdi_plugin_list("aiida.calculations")
    assert all(name in calculations for name in CALCULATIONS)
    workflows = verdi_plugin_list("aiida.workflows")
    assert all(name in workflows for name in WORKFLOWS), workflows
