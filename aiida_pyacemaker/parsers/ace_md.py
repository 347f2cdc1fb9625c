"""Parser of ``AceMdCalculation``: the trajectory summary, its time series and the selected frames.

Failures are read as for every script (``parsers/common.py``): the scheduler's verdict, ``error.json`` (310
potential, 311 input), a job killed for memory, no ``summary.json`` (300); an unreadable output is 301.
"""

from __future__ import annotations

import io
import json

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from ..calculations.ace_md import SELECTED_FILE, SUMMARY_FILE, TRAJECTORY_FILE
from ..data.structure_set import StructureSetData
from .common import ScriptParser

#: Per selected frame: the ``info`` keys the script writes, kept as arrays of the ``selected`` set.
FRAME_ARRAYS = ("gamma", "temperature", "md_step", "trajectory")


class AceMdParser(ScriptParser):
    """``summary`` (Dict), ``trajectory`` (ArrayData) and, when exploring found frames, ``selected``."""

    CACHE_VERSION = 1
    output_file = SUMMARY_FILE
    fatal_errors = {"potential_unreadable": "ERROR_POTENTIAL_UNREADABLE", "input_unreadable": "ERROR_INPUT_UNREADABLE"}

    def parse_outputs(self, names: list[str]) -> ExitCode | None:
        repository = self.retrieved.base.repository
        try:
            summary = json.loads(repository.get_object_content(SUMMARY_FILE, mode="r"))
            with repository.open(TRAJECTORY_FILE, "rb") as handle, np.load(handle) as archive:
                series = {name: archive[name] for name in archive.files}
            frames = self.read_frames(repository) if SELECTED_FILE in names else []
        except Exception as exception:  # json, numpy and ase raise many kinds on a truncated file
            self.logger.error(f"cannot read the MD outputs: {exception}")
            return self.exit_codes.ERROR_OUTPUT_CORRUPT
        if not summary.get("trajectories") or len(frames) != summary.get("frames_selected", 0):
            self.logger.error(f"{len(frames)} frames in {SELECTED_FILE}, summary says {summary.get('frames_selected')}")
            return self.exit_codes.ERROR_OUTPUT_CORRUPT
        trajectory = orm.ArrayData()
        for name, array in series.items():
            trajectory.set_array(name, array)
        self.out("summary", orm.Dict(summary))
        self.out("trajectory", trajectory)
        if frames:
            selected = StructureSetData.from_atoms(frames)
            for key in FRAME_ARRAYS:
                selected.set_array(key, np.array([frame.info[key] for frame in frames], dtype=float))
            self.out("selected", selected)
        return None

    @staticmethod
    def read_frames(repository) -> list:
        from ase.io import read

        text = repository.get_object_content(SELECTED_FILE, mode="r")
        frames = list(read(io.StringIO(text), index=":", format="extxyz"))
        for frame in frames:
            missing = [key for key in FRAME_ARRAYS if key not in frame.info]
            if missing:
                raise KeyError(f"selected frame without {missing}")
        return frames
