"""Parser of ``MaceCalculation``: reads ``results.npz`` (or ``error.json``) from the retrieved folder.

The scheduler's verdict, ``error.json`` (310 model, 311 input) and a job killed for memory are read as for every
script (``parsers/common.py``); then ``results.npz`` itself (301 when unreadable or incomplete).
"""

from __future__ import annotations

import zipfile

import numpy as np
from aiida.engine import ExitCode

from ..calculations.mace import RESULTS_FILE, MaceCalculation
from ..data.committee_results import RESULT_ARRAYS, UNCERTAINTY_ARRAYS, MaceResultsData
from .common import ScriptParser, killed_line

__all__ = ("MaceParser", "killed_line")


class MaceParser(ScriptParser):
    """Turn the committee script's output into one ``MaceResultsData`` node."""

    CACHE_VERSION = 1
    output_file = RESULTS_FILE
    fatal_errors = {"model_unreadable": "ERROR_MODEL_UNREADABLE", "input_unreadable": "ERROR_INPUT_UNREADABLE"}

    def parse_outputs(self, names: list[str]) -> ExitCode | None:
        retrieved = self.retrieved

        keys, uuids = MaceCalculation.row_keys(self.node.inputs)
        try:
            with retrieved.base.repository.open(RESULTS_FILE, "rb") as handle, np.load(handle) as archive:
                arrays = {name: archive[name] for name in RESULT_ARRAYS}
                arrays.update({name: archive[name] for name in UNCERTAINTY_ARRAYS if name in archive.files})
                kind = str(archive["uncertainty_kind"]) if "uncertainty_kind" in archive.files else "committee"
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exception:
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
        results.base.attributes.set("uncertainty_kind", kind)
        results.base.attributes.set("status_counts", {str(s): int(c) for s, c in zip(statuses, counts, strict=True)})
        self.out("results", results)
        return None
