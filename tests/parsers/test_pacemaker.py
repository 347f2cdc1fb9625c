"""``PacemakerParser`` on retrieved folders of real fits (one fixture per exit code), its readers and the driver.

Fixtures: ``fixtures/pyacemaker_pacemaker/<case>/`` hold what a job retrieves, made by the driver
``executables/pacemaker_fit.py`` with pacemaker 0.4.0rc1 (tensorpot) on 28 Si cells of ``si_dft.xyz`` with a tiny
basis (6 functions): ``default`` a 20-iteration fit; ``failed_zero_iterations`` a fit with ``gtol`` 1e10 (stops at
iteration 0); ``failed_interrupted`` the driver sent SIGTERM after 11 iterations; ``failed_fit`` pacemaker refusing
an optimiser; ``failed_conversion`` pace_yaml2yace on a broken YAML; ``failed_input_unreadable`` a NaN label.
``failed_out_of_walltime`` and ``failed_killed`` are the interrupted fit's files as a scheduler's walltime kill and a
SIGKILL leave them; ``failed_nonfinite_loss`` has the final loss of ``default`` set to nan. The metrics tables keep
a few of their rows. The potential files are shared in ``_potential/`` (``output_potential.*`` and the two interim
files of ``default``; ``interim_potential_stopped.yaml`` of the interrupted fit) and passed with ``files=``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk
from ase.io import write

from aiida_pyacemaker.data import AcePotentialData, LabelledStructuresData
from aiida_pyacemaker.parsers.pacemaker import final_rmse, interim_time, read_metrics_table

from ..conftest import FIXTURES

ENTRY_POINT = "pyacemaker.pacemaker"
POTENTIAL_FILES = FIXTURES / "pyacemaker_pacemaker" / "_potential"
WALLTIME = 120  # the scheduler's verdict (CalcJob's ERROR_SCHEDULER_OUT_OF_WALLTIME), set before the parser runs


def potential_files(*names: str, **renamed: str) -> dict[str, bytes]:
    """Shared potential files for the retrieved folder: ``names`` as they are, ``renamed`` as ``target=source``."""
    files = {name: (POTENTIAL_FILES / name).read_bytes() for name in names}
    files.update({target: (POTENTIAL_FILES / source).read_bytes() for target, source in renamed.items()})
    return files


FINISHED = ("output_potential.yaml", "output_potential.yace", "interim_potential_0.yaml")
STOPPED = {"interim_potential_0.yaml": "interim_potential_stopped.yaml"}


@pytest.fixture
def generate_inputs(si_dft_set):
    """Inputs of the parsed job: the fit parameters and a small training set."""

    def factory(**extra):
        return {
            "parameters": orm.Dict({"maxiter": 20, "backend": "tensorpot"}),
            "training_set": LabelledStructuresData.from_atoms(si_dft_set[:4]),
            **extra,
        }

    return factory


def parse(generate_calc_job_node, run_parser, inputs, fixture, exit_status=None, files=None):
    node = generate_calc_job_node(ENTRY_POINT, fixture, inputs, exit_status=exit_status, files=files)
    return run_parser(node, ENTRY_POINT)


def test_default(generate_calc_job_node, run_parser, generate_inputs, data_regression):
    files = potential_files(*FINISHED, "interim_potential_best_cycle.yaml")
    results, calcfunction = parse(generate_calc_job_node, run_parser, generate_inputs(), "default", files=files)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    assert set(results) == {"potential", "metrics", "learning_curve"}  # no interim potential after a finished fit
    potential = results["potential"]
    assert isinstance(potential, AcePotentialData)
    assert potential.elements == ["Si"] and potential.cutoff == pytest.approx(5.0)
    assert potential.has_yace and not potential.is_interim and not potential.has_active_set
    assert set(potential.reference_energy) == {"Si", "shift"}
    curve = results["learning_curve"]
    np.testing.assert_array_equal(curve.get_array("train_iter_num"), [0, 1, 10, 20])
    np.testing.assert_array_equal(curve.get_array("test_iter_num"), [0, 10, 21])  # pacemaker counts on
    metrics = results["metrics"].get_dict()
    assert metrics == potential.base.attributes.get("metrics")
    data_regression.check(metrics)


def test_failed_no_potential(generate_calc_job_node, run_parser, generate_inputs):
    """Metrics but neither a potential, nor an interim one, nor a word from the driver."""
    results, calcfunction = parse(generate_calc_job_node, run_parser, generate_inputs(), "failed_no_potential")
    assert calcfunction.exit_status == 300, calcfunction.exit_message
    assert "potential" not in results and results["metrics"]["iterations"] == 20


def test_failed_metrics_missing(generate_calc_job_node, run_parser, generate_inputs):
    """metrics.txt with its header only."""
    files = potential_files(*FINISHED)
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), "failed_metrics_missing", files=files
    )
    assert calcfunction.exit_status == 301
    assert "potential" not in results and "metrics" not in results


def test_failed_input_unreadable(generate_calc_job_node, run_parser, generate_inputs):
    _, calcfunction = parse(generate_calc_job_node, run_parser, generate_inputs(), "failed_input_unreadable")
    assert calcfunction.exit_status == 311
    assert "structure 0 has a non-finite label" in calcfunction.exit_message


def test_failed_fit(generate_calc_job_node, run_parser, generate_inputs):
    _, calcfunction = parse(generate_calc_job_node, run_parser, generate_inputs(), "failed_fit")
    assert calcfunction.exit_status == 320
    assert "Unknown optimizer `Powell`" in calcfunction.exit_message


def test_failed_conversion(generate_calc_job_node, run_parser, generate_inputs):
    files = potential_files("output_potential.yaml")
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), "failed_conversion", files=files
    )
    assert calcfunction.exit_status == 321
    assert "yaml-cpp: error" in calcfunction.exit_message
    assert "potential" not in results


def test_failed_zero_iterations(generate_calc_job_node, run_parser, generate_inputs):
    """pacemaker wrote a potential, but the fit stopped at iteration 0: nothing was fitted."""
    files = potential_files("output_potential.yaml", "output_potential.yace")
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), "failed_zero_iterations", files=files
    )
    assert calcfunction.exit_status == 330
    assert "potential" not in results
    assert results["metrics"]["iterations"] == 0


def test_failed_nonfinite_loss(generate_calc_job_node, run_parser, generate_inputs):
    files = potential_files(*FINISHED)
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), "failed_nonfinite_loss", files=files
    )
    assert calcfunction.exit_status == 331
    assert "potential" not in results
    assert results["metrics"]["final_loss"] is None  # stored as null: JSON has no NaN
    assert np.isnan(results["learning_curve"].get_array("train_loss")[-1])


def test_failed_out_of_walltime(generate_calc_job_node, run_parser, generate_inputs):
    """The scheduler's 120 becomes 400; the newest interim potential is an output, with the metrics so far."""
    results, calcfunction = parse(
        generate_calc_job_node,
        run_parser,
        generate_inputs(),
        "failed_out_of_walltime",
        exit_status=WALLTIME,
        files=potential_files(**STOPPED),
    )
    assert calcfunction.exit_status == 400, calcfunction.exit_message
    interim = results["interim_potential"]
    assert interim.is_interim and not interim.has_yace
    assert interim.base.attributes.get("source_file") == "interim_potential_0.yaml"
    assert interim.get_yaml() == (POTENTIAL_FILES / "interim_potential_stopped.yaml").read_text()
    assert interim.elements == ["Si"] and set(interim.reference_energy) == {"Si", "shift"}
    assert results["metrics"]["iterations"] == 12
    assert "potential" not in results


def test_failed_out_of_walltime_before_the_first_iteration(generate_calc_job_node, run_parser, generate_inputs):
    """No interim potential (stopped while reading the data): 400 all the same, nothing to continue from."""
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), None, exit_status=WALLTIME, files={"aiida.out": ""}
    )
    assert calcfunction.exit_status == 400
    assert results == {}


def test_newest_interim_potential_is_chosen(generate_calc_job_node, run_parser, generate_inputs):
    """Several interim files (per-iteration, best of a cycle, ladder steps): the one saved last, by its metadata."""
    older = (POTENTIAL_FILES / "interim_potential_0.yaml").read_text()
    newer = (POTENTIAL_FILES / "interim_potential_stopped.yaml").read_text()
    assert interim_time(older) < interim_time(newer)
    files = {
        "interim_potential_best_cycle.yaml": newer,
        "interim_potential_0.yaml": older,
        "interim_potential_ladder_step_1.yaml": "",  # cut off while it was written
    }
    results, calcfunction = parse(
        generate_calc_job_node,
        run_parser,
        generate_inputs(),
        "failed_out_of_walltime",
        exit_status=WALLTIME,
        files=files,
    )
    assert calcfunction.exit_status == 400
    assert results["interim_potential"].base.attributes.get("source_file") == "interim_potential_best_cycle.yaml"


def test_failed_interrupted(generate_calc_job_node, run_parser, generate_inputs):
    """The driver stopped by SIGTERM (error.json ``fit_interrupted``) after 11 iterations."""
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), "failed_interrupted", files=potential_files(**STOPPED)
    )
    assert calcfunction.exit_status == 401
    assert "stopped by SIGTERM" in calcfunction.exit_message
    assert results["interim_potential"].is_interim
    assert results["metrics"]["iterations"] == 12


def test_failed_killed(generate_calc_job_node, run_parser, generate_inputs):
    """Killed outright (SIGKILL: no error.json, no potential) with an interim potential: interrupted too."""
    results, calcfunction = parse(
        generate_calc_job_node, run_parser, generate_inputs(), "failed_killed", files=potential_files(**STOPPED)
    )
    assert calcfunction.exit_status == 401
    assert "interim_potential" in results


def test_failed_killed_while_saving(generate_calc_job_node, run_parser, generate_inputs):
    """A kill while pacemaker rewrote its only interim file leaves it empty: nothing to continue from (300)."""
    files = {"interim_potential_0.yaml": ""}
    results, calcfunction = parse(generate_calc_job_node, run_parser, generate_inputs(), "failed_killed", files=files)
    assert calcfunction.exit_status == 300
    assert "interim_potential" not in results


# --- readers and the driver (moved from test_metrics_readers.py) ---------------------------------------------------


def test_pacemaker_metrics_table():
    text = "ladder_step cycle_step iter_num loss rmse_epa rmse_f_comp\n0 0 0 1.0 0.1 0.5\n0 0 10 0.1 0.01 0.05\n"
    table = read_metrics_table(text)
    np.testing.assert_array_equal(table["iter_num"], [0, 10])
    assert final_rmse(table, "train") == {"train_rmse_e_mev_per_atom": 10.0, "train_rmse_f_mev_per_a": 50.0}
    assert read_metrics_table("header only\n") == {}


def test_interim_time_of_a_cut_off_file():
    assert interim_time("") == ""
    assert interim_time("metadata:\n  intermediate_time: 2026-01-01\nspecies: [1, 2") == ""
    assert interim_time((POTENTIAL_FILES / "interim_potential_0.yaml").read_text()).startswith("20")


def test_pacemaker_driver_refuses_non_finite_labels(tmp_path):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["REF_energy"] = float("nan")
    atoms.arrays["REF_forces"] = np.zeros((2, 3))
    write(tmp_path / "train.xyz", [atoms], format="extxyz")
    driver = resources.files("aiida_pyacemaker.executables").joinpath("pacemaker_fit.py")
    completed = subprocess.run([sys.executable, str(driver)], cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 3
    error = json.loads((tmp_path / "error.json").read_text())
    assert error["error"] == "data_unreadable" and "non-finite label" in error["message"]
