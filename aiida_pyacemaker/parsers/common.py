"""What the parsers of the plugin's standalone scripts share: the scheduler's verdict, the script's ``error.json``
and the signature of a job killed for memory in the scheduler's stderr.

The order of the checks in ``ScriptParser.parse``:

1. the scheduler's verdict, which the engine sets on the node before the parser runs: out of walltime (120) becomes
   ``ERROR_OUT_OF_WALLTIME`` (400), out of memory (110) ``ERROR_OUT_OF_MEMORY`` (410);
2. ``error.json``, the script's report of a fatal problem, mapped by ``fatal_errors``;
3. no ``output_file``: a job killed by a signal or out of memory (bash's ``Killed`` line, Slurm's ``oom-kill``,
   ``CUDA out of memory`` in the retrieved scheduler stderr) is 410, anything else ``ERROR_OUTPUT_MISSING`` (300);
4. ``parse_outputs``, the parser's own reading of the output files.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from aiida.engine import CalcJob, ExitCode
from aiida.parsers import Parser

#: Lines of the scheduler's stderr that mean the job died of memory exhaustion or a kill signal.
KILLED_PATTERNS = (
    re.compile(r"\bKilled\b"),  # bash reporting a child killed by SIGKILL (the OOM killer's signal)
    re.compile(r"oom[-_ ]kill", re.IGNORECASE),  # Slurm / cgroup: "Detected 1 oom-kill event(s)"
    re.compile(r"out of memory", re.IGNORECASE),  # "torch.OutOfMemoryError: CUDA out of memory", Slurm
    re.compile(r"\b(MemoryError|OutOfMemoryError)\b"),  # Python's own allocation failure
)
ERROR_FILE = "error.json"


def killed_line(stderr: str) -> str | None:
    """The first line of ``stderr`` that shows the job was killed or ran out of memory, else ``None``."""
    for line in stderr.splitlines():
        if any(pattern.search(line) for pattern in KILLED_PATTERNS):
            return line.strip()[:300]
    return None


class ScriptParser(Parser):
    """A parser of a job that ran one of the plugin's standalone scripts (see the module's docstring)."""

    #: The file whose absence means the script did not finish.
    output_file: ClassVar[str]
    #: ``error.json``'s ``error`` -> the name of the exit code.
    fatal_errors: ClassVar[dict[str, str]]

    def parse(self, **kwargs) -> ExitCode | None:
        scheduler_status = self.node.exit_status
        if scheduler_status == CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status:
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if scheduler_status == CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_MEMORY.status:
            return self.exit_codes.ERROR_OUT_OF_MEMORY.format(message="the scheduler reports out of memory")
        names = self.retrieved.base.repository.list_object_names()
        if ERROR_FILE in names:
            error = json.loads(self.retrieved.base.repository.get_object_content(ERROR_FILE, mode="r"))
            if error.get("error") not in self.fatal_errors:
                self.logger.error(f"unknown error report from the script: {error}")
                return self.exit_codes.ERROR_OUTPUT_CORRUPT
            return self.exit_codes[self.fatal_errors[error["error"]]].format(message=error.get("message", ""))
        if self.output_file not in names:
            line = killed_line(self.scheduler_stderr(names))
            if line is not None:
                return self.exit_codes.ERROR_OUT_OF_MEMORY.format(message=line)
            return self.exit_codes.ERROR_OUTPUT_MISSING
        return self.parse_outputs(names)

    def parse_outputs(self, names: list[str]) -> ExitCode | None:
        raise NotImplementedError

    def scheduler_stderr(self, names: list[str]) -> str:
        """The retrieved scheduler stderr (``metadata.options.scheduler_stderr``), or ``''`` when absent."""
        default = CalcJob.spec_options["scheduler_stderr"].default  # `_scheduler-stderr.txt`
        filename = self.node.get_option("scheduler_stderr") or default
        if not filename or filename not in names:
            return ""
        return self.retrieved.base.repository.get_object_content(filename, mode="r")
