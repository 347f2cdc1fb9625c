"""Parser of ``EvaluateCalculation``: the labelled final geometries from ``results.xyz``.

Failures are read as for every script (``parsers/common.py``); a results file with another number of rows than the
input, or without a label, is 301.
"""

from __future__ import annotations

import io

import numpy as np
from aiida.engine import ExitCode

from ..calculations.evaluate import RESULTS_FILE
from ..data.ace_potential import AcePotentialData
from ..data.labelled_structures import LabelledStructuresData
from .common import ScriptParser


class EvaluateParser(ScriptParser):
    """One ``LabelledStructuresData``, its rows in the order of the input set (source ``mace`` or ``other``)."""

    CACHE_VERSION = 1
    output_file = RESULTS_FILE
    fatal_errors = {"potential_unreadable": "ERROR_POTENTIAL_UNREADABLE", "input_unreadable": "ERROR_INPUT_UNREADABLE"}

    def parse_outputs(self, names: list[str]) -> ExitCode | None:
        from ase.io import read

        inputs = self.node.inputs
        source = "other" if isinstance(inputs.potential, AcePotentialData) else "mace"
        try:
            text = self.retrieved.base.repository.get_object_content(RESULTS_FILE, mode="r")
            frames = list(read(io.StringIO(text), index=":", format="extxyz"))
            if len(frames) != len(inputs.structure_set):
                raise ValueError(f"{len(frames)} results for {len(inputs.structure_set)} structures")
            labelled = LabelledStructuresData.from_atoms(
                frames,
                source=source,
                structure_uuids=[str(uuid) for uuid in inputs.structure_set.get_array("structure_uuids")],
                producer_uuids=[self.node.uuid] * len(frames),
                energy_key="ml_energy",
                forces_key="ml_forces",
                stress_key="ml_stress",
            )
        except Exception as exception:  # ase raises many kinds on a truncated file
            self.logger.error(f"cannot read {RESULTS_FILE}: {exception}")
            return self.exit_codes.ERROR_OUTPUT_CORRUPT
        labelled.set_array("relax_steps", np.array([int(frame.info["relax_steps"]) for frame in frames]))
        labelled.set_array("relax_converged", np.array([bool(frame.info["relax_converged"]) for frame in frames]))
        self.out("labelled", labelled)
        return None
