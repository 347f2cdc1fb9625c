"""Parser of ``MaceTrainCalculation``: model files and learning metrics from the retrieved folder."""

from __future__ import annotations

import json
import math
import pathlib
import re
import tempfile
from typing import Any

from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..calculations.mace_train import metrics_file, model_name
from ..data.mace_model import MaceModelData

EV_TO_MEV = 1000.0


def read_metrics(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON records mace_run_train writes to its results file, one per line."""
    records = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            records.append(json.loads(line.replace("NaN", "null").replace("Infinity", "null")))
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs run and the last validation RMSEs (meV/atom, meV/A); ``diverged`` when a loss is not finite."""
    evaluations = [record for record in records if record.get("mode") == "eval"]
    last = evaluations[-1] if evaluations else {}
    losses = [record.get("loss") for record in records if "loss" in record]
    diverged = any(loss is None or not math.isfinite(float(loss)) for loss in losses)
    summary: dict[str, Any] = {
        "epochs": int(max((record.get("epoch") or 0 for record in evaluations), default=-1)) + 1,
        "diverged": diverged,
        "valid_loss": last.get("loss"),
    }
    for key, target in (("rmse_e_per_atom", "valid_rmse_e_mev_per_atom"), ("rmse_f", "valid_rmse_f_mev_per_a")):
        if last.get(key) is not None:
            summary[target] = float(last[key]) * EV_TO_MEV
    summary["learning_curve"] = [
        {"epoch": record.get("epoch"), "loss": record.get("loss"), "rmse_f": record.get("rmse_f")}
        for record in evaluations
    ]
    return summary


_TABLE_ROW = re.compile(r"^\|\s*(train|valid)_\S*\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|", re.M)


def read_error_table(stdout: str) -> dict[str, float]:
    """Final train/valid RMSEs from the error table mace_run_train prints (meV/atom, meV/A)."""
    table: dict[str, float] = {}
    for split, energy, forces in _TABLE_ROW.findall(stdout):
        table[f"{split}_rmse_e_mev_per_atom"] = float(energy)
        table[f"{split}_rmse_f_mev_per_a"] = float(forces)
    return table


class MaceTrainParser(Parser):
    """One ``MaceModelData`` per seed plus a metrics ``Dict``."""

    CACHE_VERSION = 1

    def parse(self, **kwargs) -> ExitCode | None:
        repository = self.retrieved.base.repository
        names = set(repository.list_object_names())
        metrics: dict[str, Any] = {}
        models: dict[str, MaceModelData] = {}
        for seed in self.node.inputs.seeds.get_list():
            path = pathlib.PurePosixPath(metrics_file(seed)).name  # AiiDA retrieves nested files flat
            try:
                records = read_metrics(repository.get_object_content(path, mode="r").splitlines())
            except FileNotFoundError:
                records = []
            if not records:
                return self.exit_codes.ERROR_METRICS_MISSING.format(seed=seed)
            summary = summarise(records)
            try:
                summary.update(read_error_table(repository.get_object_content(f"{model_name(seed)}.out", mode="r")))
            except FileNotFoundError:
                self.logger.warning(f"no stdout for seed {seed}: train RMSEs are missing from the metrics")
            metrics[f"s{seed}"] = summary
            if summary["diverged"]:
                self.out("metrics", orm.Dict(metrics))
                return self.exit_codes.ERROR_TRAINING_DIVERGED.format(seed=seed)
            filename = f"{model_name(seed)}.model"
            if filename not in names:
                return self.exit_codes.ERROR_MODEL_MISSING.format(seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                target = pathlib.Path(tmp) / filename
                target.write_bytes(repository.get_object_content(filename, mode="rb"))
                models[f"s{seed}"] = MaceModelData.from_file(target, store=False, deduplicate=False)
        for key, model in models.items():
            self.out(f"models.{key}", model)
        self.out("metrics", orm.Dict(metrics))
        return None
