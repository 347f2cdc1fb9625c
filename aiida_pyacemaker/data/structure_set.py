"""``StructureSetData``: many structures in one node, as arrays with an index.

Why one node and not N ``StructureData`` inputs: aiida-core validates each new input link against all the
links already there, so a CalcJob with N structure inputs costs O(N^2) before it starts (measured here: ~30 s
for 1000 inputs, 66 s under a profiler), and storing N nodes costs ~40 ms each on SQLite (~2.5 s per 1000 in
one transaction). One array node of 1000 structures stores in ~0.1 s. Each row keeps the uuid of the
``StructureData`` it came from (empty for generated structures) and a ``config_type``, so a notebook can go
from a row back to a node. Positions may be non-finite here (``StructureData`` refuses NaN), so screening of
such input happens where the structures are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from aiida import orm


def as_text(values, width: int) -> np.ndarray:
    """A fixed-width unicode array (stored without pickle)."""
    return np.array([str(value) for value in values], dtype=f"<U{width}")


class StructureSetData(orm.ArrayData):
    """Geometry of N structures: ``numbers``/``positions`` concatenated (rows split by ``atom_offsets``),
    ``cells`` (N, 3, 3), ``pbc`` (N, 3), ``structure_uuids`` and ``config_type`` per row."""

    @classmethod
    def from_atoms(
        cls, structures: Sequence, structure_uuids: Sequence[str] | None = None, allow_empty: bool = True
    ) -> StructureSetData:
        """Build a set from ASE ``Atoms`` (their ``info['config_type']`` is kept)."""
        if len(structures) == 0:
            raise ValueError("a structure set needs at least one structure")
        sizes = np.array([len(atoms) for atoms in structures], dtype=int)
        if not allow_empty and (sizes == 0).any():
            raise ValueError(f"structure {int(np.argmin(sizes))} is empty")
        if structure_uuids is not None and len(structure_uuids) != len(structures):
            raise ValueError("structure_uuids must have one entry per structure")
        node = cls()
        node.set_array("atom_offsets", np.concatenate([[0], np.cumsum(sizes)]))
        node.set_array("numbers", np.concatenate([atoms.numbers for atoms in structures]).astype(int))
        node.set_array("positions", np.concatenate([atoms.positions for atoms in structures]).reshape(-1, 3))
        node.set_array("cells", np.array([atoms.cell.array for atoms in structures], dtype=float))
        node.set_array("pbc", np.array([atoms.pbc for atoms in structures], dtype=bool))
        node.set_array("structure_uuids", as_text(structure_uuids or [""] * len(structures), 36))
        node.set_array("config_type", as_text((atoms.info.get("config_type", "") for atoms in structures), 32))
        node.base.attributes.set("num_structures", len(structures))
        node.base.attributes.set("num_atoms", int(sizes.sum()))
        symbols = {str(symbol) for atoms in structures for symbol in atoms.get_chemical_symbols()}
        node.base.attributes.set("elements", sorted(symbols))
        return node

    @classmethod
    def from_structures(cls, structures: Sequence[orm.StructureData]) -> StructureSetData:
        """Build a set from ``StructureData`` nodes, recording their uuids."""
        return cls.from_atoms([node.get_ase() for node in structures], [node.uuid for node in structures])

    def __len__(self) -> int:
        return int(self.base.attributes.get("num_structures"))

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get("elements")

    def to_atoms(self) -> list:
        """ASE ``Atoms``, with ``structure_uuid`` and ``config_type`` in ``info``."""
        from ase import Atoms

        offsets = self.get_array("atom_offsets")
        numbers, positions = self.get_array("numbers"), self.get_array("positions")
        cells, pbc = self.get_array("cells"), self.get_array("pbc")
        uuids, config_types = self.get_array("structure_uuids"), self.get_array("config_type")
        structures = []
        for index in range(len(self)):
            rows = slice(offsets[index], offsets[index + 1])
            atoms = Atoms(numbers=numbers[rows], positions=positions[rows], cell=cells[index], pbc=pbc[index])
            atoms.info["structure_uuid"] = str(uuids[index])
            atoms.info["config_type"] = str(config_types[index])
            structures.append(atoms)
        return structures
