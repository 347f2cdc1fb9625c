"""Parser of ``MaceCalculation``: reads ``results.npz`` (or ``error.json``) from the retrieved folder."""

from __future__ import annotations

import json

import numpy as np
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..calculations.mace import ERROR_FILE, RESULTS_FILE, MaceCalculation
from ..data.committee_results import RESULT_ARRAYS, MaceResultsData

FATAL_ERRORS = {"model_unreadable": "ERROR_MODEL_UNREADABLE", "input_unreadable": "ERROR_INPUT_UNREADABLE"}


class MaceParser(Parser):
    """Turn the committee script's output into one ``MaceResultsData`` node."""

    CACHE_VERSION = 1

    def parse(self, **kwargs) -> ExitCode | None:
        retrieved = self.retrieved
        names = retrieved.base.repository.list_object_names()
        if ERROR_FILE in names:
            error = json.loads(retrieved.base.repository.get_object_content(ERROR_FILE, mode="r"))
            if error.get("error") not in FATAL_ERRORS:
                self.logger.error(f"unknown error report from the committee script: {error}")
                return self.exit_codes.ERROR_OUTPUT_CORRUPT
            return self.exit_codes[FATAL_ERRORS[error["error"]]].format(message=error.get("message", ""))
        if RESULTS_FILE not in names:
            return self.exit_codes.ERROR_OUTPUT_MISSING

        keys, uuids = MaceCalculation.row_keys(self.node.inputs)
        try:
            with retrieved.base.repository.open(RESULTS_FILE, "rb") as handle, np.load(handle) as archive:
                arrays = {name: archive[name] for name in RESULT_ARRAYS}
        except (OSError, KeyError, ValueError) as exception:
            self.logger.error(f"cannot read {RESULTS_FILE}: {exception}")
            return self.exit_codes.ERROR_OUTPUT_CORRUPT
        if len(arrays["status"]) != len(keys):
            self.logger.error(f"{len(arrays['status'])} result rows for {len(keys)} input structures")
            return self.exit_codes.ERROR_OUTPUT_CORRUPT

        results = MaceResultsData()
        for name, array in arrays.items():
            results.set_array(name, array)
        results.set_array("keys", np.array(keys, dtype="<U255"))
        results.set_array("structure_uuids", np.array(uuids, dtype="<U36"))
        statuses, counts = np.unique(arrays["status"], return_counts=True)
        results.base.attributes.set("num_structures", len(keys))
        results.base.attributes.set("num_models", int(arrays["energy_per_model"].shape[0]))
        results.base.attributes.set("status_counts", {str(s): int(c) for s, c in zip(statuses, counts, strict=True)})
        self.out("results", results)
        return None
