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


def summarise_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs run and the last validation RMSEs (meV/atom, meV/A); ``diverged`` when a loss is not finite.

    ``epochs`` counts the finished epochs: the evaluation before training (``epoch: null``) is not one. After a
    restart from a checkpoint the epoch numbers go on, so ``epochs`` is the total of the whole training.
    """
    evaluations = [record for record in records if record.get("mode") == "eval"]
    last = evaluations[-1] if evaluations else {}
    losses = [record.get("loss") for record in records if "loss" in record]
    diverged = any(loss is None or not math.isfinite(float(loss)) for loss in losses)
    finished = [int(record["epoch"]) for record in evaluations if record.get("epoch") is not None]
    summary: dict[str, Any] = {
        "epochs": max(finished, default=-1) + 1,
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
    """One ``MaceModelData`` per seed plus a metrics ``Dict``.

    Checked per seed, in the order of ``seeds``: metrics missing (301), a non-finite loss (320), model missing (300).
    A job the scheduler killed for its walltime (120, set by the engine before parsing) becomes 400 unless a seed
    diverged (320 wins: a restart from the checkpoint would diverge again); the finished seeds' models and every
    seed's metrics so far are attached.
    """

    CACHE_VERSION = 1

    def parse(self, **kwargs) -> ExitCode | None:
        seeds = self.node.inputs.seeds.get_list()
        metrics = {f"s{seed}": summary for seed in seeds if (summary := self.read_summary(seed)) is not None}
        if self.node.exit_status == self.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status:
            return self.parse_out_of_walltime(seeds, metrics)

        models: dict[str, MaceModelData] = {}
        for seed in seeds:
            key = f"s{seed}"
            if key not in metrics:
                return self.exit_codes.ERROR_METRICS_MISSING.format(seed=seed)
            if metrics[key]["diverged"]:
                self.out("metrics", orm.Dict(metrics))
                return self.exit_codes.ERROR_TRAINING_DIVERGED.format(seed=seed)
            model = self.read_model(seed)
            if model is None:
                return self.exit_codes.ERROR_MODEL_MISSING.format(seed=seed)
            models[key] = model
        for key, model in models.items():
            self.out(f"models.{key}", model)
        self.out("metrics", orm.Dict(metrics))
        return None

    def parse_out_of_walltime(self, seeds: list[int], metrics: dict[str, Any]) -> ExitCode:
        """Attach what finished before the scheduler killed the job; 320 if a seed diverged, else 400."""
        if metrics:
            self.out("metrics", orm.Dict(metrics))
        diverged = [seed for seed in seeds if metrics.get(f"s{seed}", {}).get("diverged")]
        if diverged:
            return self.exit_codes.ERROR_TRAINING_DIVERGED.format(seed=diverged[0])
        for seed in seeds:
            model = self.read_model(seed)
            if model is not None:
                self.out(f"models.s{seed}", model)
        return self.exit_codes.ERROR_OUT_OF_WALLTIME

    def read_summary(self, seed: int) -> dict[str, Any] | None:
        """The metrics summary of one seed (with the train/valid RMSEs of its stdout), None without records."""
        repository = self.retrieved.base.repository
        path = pathlib.PurePosixPath(metrics_file(seed)).name  # AiiDA retrieves nested files flat
        try:
            records = read_metrics(repository.get_object_content(path, mode="r").splitlines())
        except FileNotFoundError:
            return None
        if not records:
            return None
        summary = summarise_metrics(records)
        try:
            summary.update(read_error_table(repository.get_object_content(f"{model_name(seed)}.out", mode="r")))
        except FileNotFoundError:
            self.logger.warning(f"no stdout for seed {seed}: train RMSEs are missing from the metrics")
        return summary

    def read_model(self, seed: int) -> MaceModelData | None:
        """The model file of one seed as a new (unstored) ``MaceModelData``, None when it was not retrieved."""
        repository = self.retrieved.base.repository
        filename = f"{model_name(seed)}.model"
        if filename not in repository.list_object_names():
            return None
        with tempfile.TemporaryDirectory() as tmp:
            target = pathlib.Path(tmp) / filename
            target.write_bytes(repository.get_object_content(filename, mode="rb"))
            return MaceModelData.from_file(target, store=False, deduplicate=False)
