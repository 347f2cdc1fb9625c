"""Parser of ``PacemakerCalculation``: potential, metrics and learning curve from the retrieved folder.

A fit that was stopped (the scheduler's walltime, or a kill before ``output_potential.yaml`` was written) still
gives the newest of pacemaker's ``interim_potential_*.yaml`` as ``interim_potential``, with the metrics so far, so
that the restart wrapper can continue from it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import pathlib
import tempfile
from typing import Any

import numpy as np
import yaml
from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..calculations.pacemaker import INTERIM_PATTERN
from ..data.ace_potential import AcePotentialData

FATAL_ERRORS = {
    "data_unreadable": "ERROR_INPUT_UNREADABLE",
    "fit_failed": "ERROR_FIT_FAILED",
    "conversion_failed": "ERROR_CONVERSION_FAILED",
}
INTERRUPTED = "fit_interrupted"
POTENTIAL = "output_potential.yaml"
EV_TO_MEV = 1000.0


def read_metrics_table(text: str) -> dict[str, np.ndarray]:
    """pacemaker's whitespace table (header line, one row per recorded iteration) as columns."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header, rows = lines[0], np.array(lines[1:], dtype=float)
    return {name: rows[:, index] for index, name in enumerate(header)}


def final_rmse(table: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    if not table:
        return {}
    return {
        f"{prefix}_rmse_e_mev_per_atom": float(table["rmse_epa"][-1]) * EV_TO_MEV,
        f"{prefix}_rmse_f_mev_per_a": float(table["rmse_f_comp"][-1]) * EV_TO_MEV,
    }


def interim_time(text: str) -> str:
    """When pacemaker saved an interim potential (its ``metadata.intermediate_time``, ISO-like, sorts as text)."""
    try:
        content = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return ""
    if not isinstance(content, dict) or not content.get("species"):
        return ""  # cut off while it was written
    return str((content.get("metadata") or {}).get("intermediate_time", ""))


class PacemakerParser(Parser):
    """``AcePotentialData`` plus metrics and the learning curve; refuses fits that fitted nothing."""

    CACHE_VERSION = 1

    def parse(self, **kwargs) -> ExitCode | None:
        repository = self.retrieved.base.repository
        names = set(repository.list_object_names())
        if self.node.exit_status == self.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status:
            self._parse_metrics(names)
            self._parse_interim(names)
            return self.exit_codes.ERROR_OUT_OF_WALLTIME

        error: dict[str, Any] = {}
        if "error.json" in names:
            error = json.loads(repository.get_object_content("error.json", mode="r"))
        # Stopped by a signal (the driver says so) or killed outright (no error.json and no potential).
        if error.get("error") == INTERRUPTED or (not error and POTENTIAL not in names):
            message = error.get("message", "the job ended without a word from the driver")
            if self._parse_interim(names):
                self._parse_metrics(names)
                return self.exit_codes.ERROR_INTERRUPTED.format(message=message)
        if error:
            kind = FATAL_ERRORS.get(error.get("error", ""), "ERROR_FIT_FAILED")
            return self.exit_codes[kind].format(message=error.get("message", str(error)))

        metrics = self._parse_metrics(names)
        if metrics is None:
            return self.exit_codes.ERROR_METRICS_MISSING
        if not math.isfinite(metrics["final_loss"]):
            return self.exit_codes.ERROR_NONFINITE_LOSS
        if metrics["iterations"] == 0:
            return self.exit_codes.ERROR_ZERO_ITERATIONS
        if POTENTIAL not in names:
            return self.exit_codes.ERROR_NO_POTENTIAL

        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for suffix in ("yaml", "yace", "asi"):
                name = f"output_potential.{suffix}"
                if name in names:
                    paths[suffix] = pathlib.Path(tmp) / name
                    paths[suffix].write_bytes(repository.get_object_content(name, mode="rb"))
            potential = AcePotentialData.from_files(
                paths["yaml"], paths.get("yace"), paths.get("asi"), backend=self._backend(), metrics=_plain(metrics)
            )
        self.out("potential", potential)
        return None

    def _backend(self) -> str:
        return self.node.inputs.parameters.get_dict().get("backend", "tensorpot")

    def _parse_metrics(self, names: set[str]) -> dict[str, Any] | None:
        """Output ``metrics`` and ``learning_curve`` from pacemaker's tables; ``None`` when there are none."""
        repository = self.retrieved.base.repository
        if "metrics.txt" not in names:
            return None
        train = read_metrics_table(repository.get_object_content("metrics.txt", mode="r"))
        if not train:
            return None
        test = {}
        if "test_metrics.txt" in names:
            test = read_metrics_table(repository.get_object_content("test_metrics.txt", mode="r"))
        metrics = {
            "iterations": int(train["iter_num"].max()),
            "initial_loss": float(train["loss"][0]),
            "final_loss": float(train["loss"][-1]),
            "backend": self._backend(),
            "warm_start": "previous_potential" in self.node.inputs,
            "force_rmse_is_per_component": True,
            **final_rmse(train, "train"),
            **final_rmse(test, "test"),
        }
        curve = orm.ArrayData()
        for name in ("iter_num", "loss", "rmse_epa", "rmse_f_comp"):
            curve.set_array(f"train_{name}", train[name])
            if test:
                curve.set_array(f"test_{name}", test[name])
        self.out("learning_curve", curve)
        self.out("metrics", orm.Dict(_plain(metrics)))
        return metrics

    def _parse_interim(self, names: set[str]) -> bool:
        """Output the newest complete interim potential as ``interim_potential``; whether there was one."""
        repository = self.retrieved.base.repository
        found = []
        for name in sorted(fnmatch.filter(names, INTERIM_PATTERN)):
            text = repository.get_object_content(name, mode="r")
            saved = interim_time(text)
            if saved:
                found.append((saved, name, text))
        if not found:
            return False
        _, name, text = max(found)
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "interim_potential.yaml"
            path.write_text(text)
            potential = AcePotentialData.from_files(path, backend=self._backend(), interim=True, source_file=name)
        self.out("interim_potential", potential)
        return True


def _plain(value: Any) -> Any:
    """JSON-safe copy (non-finite numbers become None)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
