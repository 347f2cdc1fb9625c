"""``MaceResultsData``: per-structure results of one MACE committee job, as arrays with an index.

Row ``i`` belongs to the input structure whose uuid is ``structure_uuids[i]`` and whose key is ``keys[i]`` (the
link label of a ``StructureData`` input, or the row number of a ``StructureSetData`` input);
forces of row ``i`` are ``forces[atom_offsets[i]:atom_offsets[i + 1]]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm

#: Arrays the committee script writes; the parser refuses a results file without them.
RESULT_ARRAYS = (
    "status",
    "n_atoms",
    "atom_offsets",
    "energy",
    "forces",
    "stress",
    "energy_per_model",
    "forces_per_model",
    "uncertainty",
    "energy_std_per_atom",
    "mean_force_std",
)
#: Arrays of the uncertainty that newer versions of the script write (results without them still parse).
UNCERTAINTY_ARRAYS = ("force_std", "stress_std", "committee_uncertainty", "latent_distance")


class MaceResultsData(orm.ArrayData):
    """Energy, forces, stress, per-model predictions, uncertainty and status for every structure of a job."""

    def __len__(self) -> int:
        return int(self.base.attributes.get("num_structures"))

    @property
    def status_counts(self) -> dict[str, int]:
        return self.base.attributes.get("status_counts")

    def row_of(self, structure: orm.StructureData | str) -> int:
        """The row index of a structure node (or its uuid)."""
        uuid = structure if isinstance(structure, str) else structure.uuid
        rows = np.flatnonzero(self.get_array("structure_uuids") == uuid)
        if len(rows) == 0:
            raise KeyError(f"structure {uuid} is not in these results")
        return int(rows[0])

    def record(self, row: int) -> dict[str, Any]:
        """All results of one row as plain Python/numpy values."""
        offsets = self.get_array("atom_offsets")
        atoms = slice(offsets[row], offsets[row + 1])
        return {
            "structure_uuid": str(self.get_array("structure_uuids")[row]),
            "key": str(self.get_array("keys")[row]),
            "status": str(self.get_array("status")[row]),
            "energy": float(self.get_array("energy")[row]),
            "forces": self.get_array("forces")[atoms],
            "stress": self.get_array("stress")[row],
            "energy_per_model": self.get_array("energy_per_model")[:, row],
            "forces_per_model": self.get_array("forces_per_model")[:, atoms],
            "uncertainty": float(self.get_array("uncertainty")[row]),
            "energy_std_per_atom": float(self.get_array("energy_std_per_atom")[row]),
            "mean_force_std": float(self.get_array("mean_force_std")[row]),
            **{name: float(self.get_array(name)[row]) for name in UNCERTAINTY_ARRAYS if name in self.get_arraynames()},
        }

    @property
    def uncertainty_kind(self) -> str:
        """``committee`` (spread of the models) or ``latent`` (distance to the reference structures)."""
        return self.base.attributes.get("uncertainty_kind", "committee")

    def for_structure(self, structure: orm.StructureData | str) -> dict[str, Any]:
        """All results of one input structure."""
        return self.record(self.row_of(structure))
