"""The plugin's entry points are visible to AiiDA (``verdi plugin list``) and load."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiida.plugins import CalculationFactory, DataFactory, ParserFactory

CALCULATIONS = ("pyacemaker.mace", "pyacemaker.mace.train")
DATA = (
    "pyacemaker.mace.model",
    "pyacemaker.mace.results",
    "pyacemaker.structure_set",
    "pyacemaker.labelled_structures",
)


@pytest.mark.parametrize("name", CALCULATIONS)
def test_calculation_and_parser_load(name):
    assert CalculationFactory(name).__name__.endswith("Calculation")
    assert ParserFactory(name).__name__.endswith("Parser")


@pytest.mark.parametrize("name", DATA)
def test_data_types_load(name):
    assert DataFactory(name).__name__.endswith("Data")


def test_verdi_plugin_list_shows_the_calculations():
    listing = subprocess.run(
        [sys.executable, "-m", "aiida", "plugin", "list", "aiida.calculations"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in CALCULATIONS:
        assert name in listing
