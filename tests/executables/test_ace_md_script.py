"""``ace_md.py`` and ``evaluate_structures.py`` run for real on small cells (python-ace, mace-torch; seconds)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from aiida_pyacemaker.calculations.ace_md import DEFAULT_PARAMETERS

SI_ACE_MD = pathlib.Path(__file__).resolve().parents[1] / "data" / "si_ace_md"
FOUNDATION = pathlib.Path(__file__).resolve().parents[2] / "models" / "si-foundation" / "mace_si_foundation.model"


def run_script(name: str, folder: pathlib.Path, *arguments: str) -> subprocess.CompletedProcess:
    script = str(resources.files("aiida_pyacemaker") / "executables" / name)
    return subprocess.run([sys.executable, script, *arguments], cwd=folder, capture_output=True, text=True, timeout=600)


def run_md(folder: pathlib.Path, parameters: dict, active_set: bool = True) -> dict:
    write(folder / "start.xyz", [bulk("Si", "diamond", a=5.43, cubic=True)])
    (folder / "parameters.json").write_text(json.dumps({**DEFAULT_PARAMETERS, **parameters}))  # as the CalcJob
    arguments = ["--potential", str(SI_ACE_MD / "potential.yaml"), "--structures", "start.xyz"]
    arguments += ["--parameters", "parameters.json"]
    if active_set:
        arguments += ["--active-set", str(SI_ACE_MD / "potential.asi")]
    completed = run_script("ace_md.py", folder, *arguments)
    assert completed.returncode == 0, completed.stderr
    return json.loads((folder / "summary.json").read_text())


def test_a_trajectory_stops_at_gamma_stop(tmp_path):
    summary = run_md(tmp_path, {"temperatures": [3000.0], "steps": 2000, "gamma_select": 1.05, "gamma_stop": 1.3})
    (record,) = summary["trajectories"]
    assert record["stop_reason"] == "gamma" and record["steps"] < 2000
    assert record["max_gamma"] >= 1.3
    frames = read(tmp_path / "selected.xyz", index=":") if summary["frames_selected"] else []
    assert all(1.05 <= frame.info["gamma"] < 1.3 for frame in frames), "frames beyond gamma_stop are not kept"


def test_a_collapsed_pair_stops_the_trajectory(tmp_path):
    """A closest-pair bound above the bond length (2.35 A) must be reported as a collapse at once."""
    summary = run_md(tmp_path, {"mode": "stability", "temperatures": [300.0], "steps": 50, "min_distance": 2.6})
    (record,) = summary["trajectories"]
    assert record["stop_reason"] == "collapsed" and record["steps"] == 1
    assert record["min_distance_at_end"] < 2.6


def test_stability_without_active_set_reports_nve_drift(tmp_path):
    parameters = {"mode": "stability", "temperatures": [600.0], "steps": 100, "nve_steps": 100, "log_interval": 5}
    summary = run_md(tmp_path, parameters, active_set=False)
    (record,) = summary["trajectories"]
    assert record["stop_reason"] == "completed" and record["steps"] == 200 and record["atoms"] == 64
    assert np.isfinite(record["nve_drift_mev_per_atom_per_ps"])
    assert record["max_gamma"] == 0.0, "no active set: no gamma"
    series = np.load(tmp_path / "trajectory.npz")
    assert len(series["t000_time_ps"]) == 40


@pytest.mark.parametrize("engine", ["ace", "mace"])
def test_evaluate_relaxes_flagged_rows(tmp_path, engine):
    rattled = bulk("Si", "diamond", a=5.43, cubic=True)
    rattled.rattle(0.03, seed=2)
    rattled.info["relax"] = True
    single = rattled.copy()
    single.info["relax"] = False
    write(tmp_path / "structures.xyz", [single, rattled])
    potential = str(SI_ACE_MD / "potential.yaml") if engine == "ace" else str(FOUNDATION)
    completed = run_script(
        "evaluate_structures.py",
        tmp_path,
        "--engine",
        engine,
        "--potential",
        potential,
        "--structures",
        "structures.xyz",
        "--fmax",
        "0.01",
    )
    assert completed.returncode == 0, completed.stderr
    first, second = read(tmp_path / "results.xyz", index=":")
    assert first.info["relax_steps"] == 0 and np.abs(first.arrays["ml_forces"]).max() > 0.05
    assert second.info["relax_converged"] and np.abs(second.arrays["ml_forces"]).max() < 0.01
    assert second.info["ml_energy"] < first.info["ml_energy"], "relaxing lowers the energy"


def test_parameters_missing_a_key_are_refused(tmp_path):
    write(tmp_path / "start.xyz", [bulk("Si", "diamond", a=5.43, cubic=True)])
    (tmp_path / "parameters.json").write_text(json.dumps({"mode": "explore"}))
    arguments = ["--potential", str(SI_ACE_MD / "potential.yaml"), "--structures", "start.xyz"]
    completed = run_script("ace_md.py", tmp_path, *arguments, "--parameters", "parameters.json")
    assert completed.returncode == 2
    error = json.loads((tmp_path / "error.json").read_text())
    assert error["error"] == "input_unreadable" and "misses" in error["message"] and "temperatures" in error["message"]
