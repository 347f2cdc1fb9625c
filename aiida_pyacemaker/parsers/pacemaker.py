"""Parser of ``PacemakerCalculation``: potential, metrics and learning curve from the retrieved folder."""

from __future__ import annotations

import json
import math
import pathlib
import tempfile

import numpy as np
from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..data.ace_potential import AcePotentialData

FATAL_ERRORS = {
    "data_unreadable": "ERROR_INPUT_UNREADABLE",
    "fit_failed": "ERROR_FIT_FAILED",
    "conversion_failed": "ERROR_CONVERSION_FAILED",
}
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


class PacemakerParser(Parser):
    """``AcePotentialData`` plus metrics and the learning curve; refuses fits that fitted nothing."""

    CACHE_VERSION = 1

    def parse(self, **kwargs) -> ExitCode | None:
        repository = self.retrieved.base.repository
        names = set(repository.list_object_names())
        if "error.json" in names:
            error = json.loads(repository.get_object_content("error.json", mode="r"))
            if error.get("error") in FATAL_ERRORS:
                return self.exit_codes[FATAL_ERRORS[error["error"]]].format(message=error.get("message", ""))
            return self.exit_codes.ERROR_FIT_FAILED.format(message=str(error))
        if "metrics.txt" not in names:
            return self.exit_codes.ERROR_METRICS_MISSING
        train = read_metrics_table(repository.get_object_content("metrics.txt", mode="r"))
        if not train:
            return self.exit_codes.ERROR_METRICS_MISSING
        test = {}
        if "test_metrics.txt" in names:
            test = read_metrics_table(repository.get_object_content("test_metrics.txt", mode="r"))

        iterations = int(train["iter_num"].max())
        final_loss = float(train["loss"][-1])
        backend = self.node.inputs.parameters.get_dict().get("backend", "tensorpot")
        metrics = {
            "iterations": iterations,
            "initial_loss": float(train["loss"][0]),
            "final_loss": final_loss,
            "backend": backend,
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
        self.out("metrics", orm.Dict(metrics))
        if not math.isfinite(final_loss):
            return self.exit_codes.ERROR_NONFINITE_LOSS
        if iterations == 0:
            return self.exit_codes.ERROR_ZERO_ITERATIONS
        if "output_potential.yaml" not in names:
            return self.exit_codes.ERROR_NO_POTENTIAL

        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for suffix in ("yaml", "yace", "asi"):
                name = f"output_potential.{suffix}"
                if name in names:
                    paths[suffix] = pathlib.Path(tmp) / name
                    paths[suffix].write_bytes(repository.get_object_content(name, mode="rb"))
            potential = AcePotentialData.from_files(
                paths["yaml"], paths.get("yace"), paths.get("asi"), backend=backend, metrics=_plain(metrics)
            )
        self.out("potential", potential)
        return None


def _plain(metrics: dict) -> dict:
    """JSON-safe copy (non-finite numbers become None)."""
    return json.loads(json.dumps(metrics, default=str).replace("NaN", "null").replace("Infinity", "null"))
