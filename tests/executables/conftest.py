"""The standalone scripts the codes run, imported as modules (they import no AiiDA)."""

from __future__ import annotations

import importlib.util
from importlib import resources
from types import ModuleType

import pytest


def load_executable(filename: str) -> ModuleType:
    path = resources.files("aiida_pyacemaker") / "executables" / filename
    spec = importlib.util.spec_from_file_location(filename.removesuffix(".py"), str(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """``mace_committee.py``, the committee script of ``MaceCalculation``."""
    return load_executable("mace_committee.py")


@pytest.fixture(scope="module")
def driver() -> ModuleType:
    """``pacemaker_fit.py``, the fit driver of ``PacemakerCalculation``."""
    return load_executable("pacemaker_fit.py")
