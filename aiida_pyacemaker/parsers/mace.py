"""Parser of ``MaceCalculation``: reads ``results.npz`` (or ``error.json``) from the retrieved folder.

The order of the checks:

1. the scheduler's verdict, which the engine sets on the node before the parser runs: out of walltime (120) becomes
   ``ERROR_OUT_OF_WALLTIME`` (400), out of memory (110) becomes ``ERROR_OUT_OF_MEMORY`` (410);
2. ``error.json``, the committee script's report of a fatal problem (310 model, 311 input);
3. no ``results.npz``: a job killed by a signal or out of memory (the signature of it in the retrieved scheduler
   stderr, e.g. bash's ``Killed`` line when the kernel's OOM killer sent SIGKILL, or ``CUDA out of memory``) is 410,
   anything else 300;
4. ``results.npz`` itself (301 when unreadable or incomplete).
"""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
from aiida.engine import CalcJob, ExitCode
from aiida.parsers import Parser

from ..calculations.mace import ERROR_FILE, RESULTS_FILE, MaceCalculation
from ..data.committee_results import RESULT_ARRAYS, UNCERTAINTY_ARRAYS, MaceResultsData

FATAL_ERRORS = {"model_unreadable": "ERROR_MODEL_UNREADABLE", "input_unreadable": "ERROR_INPUT_UNREADABLE"}

#: Lines of the scheduler's stderr that mean the job died of memory exhaustion or a kill signal.
KILLED_PATTERNS = (
    re.compile(r"\bKilled\b"),  # bash reporting a child killed by SIGKILL (the OOM killer's signal)
    re.compile(r"oom[-_ ]kill", re.IGNORECASE),  # Slurm / cgroup: "Detected 1 oom-kill event(s)"
    re.compile(r"out of memory", re.IGNORECASE),  # "torch.OutOfMemoryError: CUDA out of memory", Slurm
    re.compile(r"\b(MemoryError|OutOfMemoryError)\b"),  # Python's own allocation failure
)


def killed_line(stderr: str) -> str | None:
    """The first line of ``stderr`` that shows the job was killed or ran out of memory, else ``None``."""
    for line in stderr.splitlines():
        if any(pattern.search(line) for pattern in KILLED_PATTERNS):
            return line.strip()[:300]
    return None


class MaceParser(Parser):
    """Turn the committee script's output into one ``MaceResultsData`` node."""

    CACHE_VERSION = 1

    def parse(self, **kwargs) -> ExitCode | None:
        scheduler_status = self.node.exit_status
        if scheduler_status == CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status:
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if scheduler_status == CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_MEMORY.status:
            return self.exit_codes.ERROR_OUT_OF_MEMORY.format(message="the scheduler reports out of memory")

        retrieved = self.retrieved
        names = retrieved.base.repository.list_object_names()
        if ERROR_FILE in names:
            error = json.loads(retrieved.base.repository.get_object_content(ERROR_FILE, mode="r"))
            if error.get("error") not in FATAL_ERRORS:
                self.logger.error(f"unknown error report from the committee script: {error}")
                return self.exit_codes.ERROR_OUTPUT_CORRUPT
            return self.exit_codes[FATAL_ERRORS[error["error"]]].format(message=error.get("message", ""))
        if RESULTS_FILE not in names:
            line = killed_line(self.scheduler_stderr(names))
            if line is not None:
                return self.exit_codes.ERROR_OUT_OF_MEMORY.format(message=line)
            return self.exit_codes.ERROR_OUTPUT_MISSING

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

    def scheduler_stderr(self, names: list[str]) -> str:
        """The retrieved scheduler stderr (``metadata.options.scheduler_stderr``), or ``''`` when absent."""
        default = MaceCalculation.spec_options["scheduler_stderr"].default  # `_scheduler-stderr.txt`
        filename = self.node.get_option("scheduler_stderr") or default
        if not filename or filename not in names:
            return ""
        return self.retrieved.base.repository.get_object_content(filename, mode="r")
