"""What the plugin's CalcJobs share: serial defaults and shipping a standalone script into the job folder."""

from __future__ import annotations

from importlib import resources

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
