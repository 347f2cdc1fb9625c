"""What the plugin's CalcJobs share: serial defaults, shipping a standalone script into the job folder, the check
of a ``parameters`` Dict against a table of allowed keys, and the exit codes of a script that loads a potential."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from aiida.common.folders import Folder


def set_serial_defaults(spec, parser_name: str) -> None:
    """One process on one machine, no MPI, and the job's parser."""
    options = spec.inputs["metadata"]["options"]
    options["resources"].default = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
    options["parser_name"].default = parser_name
    options["withmpi"].default = False


def copy_executable(folder: Folder, name: str) -> None:
    """Write the standalone script ``executables/<name>`` into the job folder (it runs with the code's Python)."""
    with resources.files("aiida_pyacemaker.executables").joinpath(name).open("rb") as handle:
        folder.create_file_from_filelike(handle, name, mode="wb")


#: A table of allowed ``parameters`` keys: key -> (type, check, description of the allowed values).
ParameterTable = Mapping[str, tuple[type | tuple[type, ...], Any, str]]


def check_parameters(values: Mapping[str, Any], table: ParameterTable) -> str | None:
    """Every key known, every value of the right type (never a bool for a number) and range; else the message."""
    for key, item in values.items():
        if key not in table:
            return f"parameters: unknown key `{key}`; allowed: {', '.join(sorted(table))}"
        kind, check, allowed = table[key]
        if isinstance(item, bool) or not isinstance(item, kind) or not check(item):
            return f"parameters.{key} = {item!r} is invalid: expected {allowed}"
    return None


def add_potential_script_exit_codes(spec, output: str) -> None:
    """The exit codes of a script that loads a potential and structures and writes ``output`` at the end."""
    spec.exit_code(300, "ERROR_OUTPUT_MISSING", message=f"The script wrote no {output}.")
    spec.exit_code(301, "ERROR_OUTPUT_CORRUPT", message="An output file is unreadable or incomplete.")
    spec.exit_code(310, "ERROR_POTENTIAL_UNREADABLE", message="The potential could not be loaded: {message}")
    spec.exit_code(311, "ERROR_INPUT_UNREADABLE", message="The structures could not be read: {message}")
    spec.exit_code(400, "ERROR_OUT_OF_WALLTIME", message="The job hit its walltime before it finished.")
    spec.exit_code(410, "ERROR_OUT_OF_MEMORY", message="The job ran out of memory or was killed: {message}")
