"""Failure paths of the parsers' readers and of the pacemaker driver, on small hand-made files."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
from ase.build import bulk
from ase.io import write

from aiida_pyacemaker.parsers.mace_train import read_error_table, read_metrics, summarise
from aiida_pyacemaker.parsers.pacemaker import final_rmse, read_metrics_table


def test_nan_loss_marks_training_as_diverged():
    lines = [
        '{"loss": 1.0, "mode": "opt", "epoch": 0}',
        '{"loss": NaN, "mode": "eval", "epoch": 0, "rmse_e_per_atom": NaN, "rmse_f": NaN}',
    ]
    summary = summarise(read_metrics(lines))
    assert summary["diverged"] is True
    assert summary["epochs"] == 1


def test_finite_training_metrics_are_converted_to_mev():
    lines = ['{"loss": 0.5, "mode": "eval", "epoch": 4, "rmse_e_per_atom": 0.002, "rmse_f": 0.05}']
    summary = summarise(read_metrics(lines))
    assert not summary["diverged"]
    assert summary["epochs"] == 5
    assert summary["valid_rmse_e_mev_per_atom"] == 2.0
    assert summary["valid_rmse_f_mev_per_a"] == 50.0


def test_error_table_of_mace_run_train():
    stdout = "| train_Default |  11.0 |  126.6 | 6.37 |\n| valid_Default | 8.4 | 98.7 | 7.04 |\n"
    assert read_error_table(stdout) == {
        "train_rmse_e_mev_per_atom": 11.0,
        "train_rmse_f_mev_per_a": 126.6,
        "valid_rmse_e_mev_per_atom": 8.4,
        "valid_rmse_f_mev_per_a": 98.7,
    }


def test_pacemaker_metrics_table():
    text = "ladder_step cycle_step iter_num loss rmse_epa rmse_f_comp\n0 0 0 1.0 0.1 0.5\n0 0 10 0.1 0.01 0.05\n"
    table = read_metrics_table(text)
    np.testing.assert_array_equal(table["iter_num"], [0, 10])
    assert final_rmse(table, "train") == {"train_rmse_e_mev_per_atom": 10.0, "train_rmse_f_mev_per_a": 50.0}
    assert read_metrics_table("header only\n") == {}


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
