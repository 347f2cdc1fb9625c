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

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from aiida import orm

#: All arrays of a set live in this one repository object (an ``.npz``), read once and cached per node.
ARRAYS_OBJECT = "arrays.npz"
#: Arrays with one entry per atom; ``atom_offsets`` splits them into structures. Every other array has one
#: entry per structure.
PER_ATOM_ARRAYS = frozenset({"numbers", "positions", "forces"})
SetType = TypeVar("SetType", bound="StructureSetData")


def load_arrays(nodes: Sequence[StructureSetData], names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The named arrays of many sets, the stored ones read from the repository in one streamed pass.

    Opening the object store once per node costs a database session each; at 100 nodes that dominates.
    """
    import io

    from aiida.manage import get_manager

    result: list[dict[str, np.ndarray]] = [{} for _ in nodes]
    wanted: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        if node.is_stored and not node._cached_arrays:
            key = node.base.repository.get_object(ARRAYS_OBJECT).key
            assert key is not None
            wanted.setdefault(key, []).append(index)
    if wanted:
        repository = get_manager().get_profile_storage().get_repository()
        for key, stream in repository.iter_object_streams(list(wanted)):
            with np.load(io.BytesIO(stream.read()), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            for index in wanted[key]:
                nodes[index]._cached_arrays = dict(arrays)
    for index, node in enumerate(nodes):
        result[index] = {name: node.get_array(name) for name in names}
    return result


def fingerprints(
    offsets: np.ndarray, numbers: np.ndarray, positions: np.ndarray, cells: np.ndarray, pbc: np.ndarray
) -> np.ndarray:
    """A sha1 per structure of its numbers, positions and cell (rounded to 1e-4 A): equal geometry, equal print."""
    prints = []
    for index in range(len(cells)):
        rows = slice(offsets[index], offsets[index + 1])
        digest = hashlib.sha1(numbers[rows].astype(np.int64).tobytes())
        digest.update(np.round(positions[rows], 4).tobytes())
        digest.update(np.round(cells[index], 4).tobytes())
        digest.update(pbc[index].tobytes())
        prints.append(digest.hexdigest())
    return np.array(prints, dtype="<U40")


def as_text(values, width: int) -> np.ndarray:
    """A fixed-width unicode array (stored without pickle)."""
    return np.array([str(value) for value in values], dtype=f"<U{width}")


class StructureSetData(orm.ArrayData):
    """Geometry of N structures: ``numbers``/``positions`` concatenated (rows split by ``atom_offsets``),
    ``cells`` (N, 3, 3), ``pbc`` (N, 3), ``structure_uuids`` and ``config_type`` per row.

    Unlike a plain ``ArrayData`` (one ``.npy`` object per array), all arrays are stored as one ``.npz`` object:
    a history of 100 sets is then 100 objects to read and hash, not 1500.
    """

    def set_array(self, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            raise TypeError("StructureSetData stores numpy arrays only")
        if self.is_stored:
            raise RuntimeError("a stored StructureSetData cannot be changed")
        self._validate_array_name(name)
        self._unstored_arrays()[name] = array
        self.base.attributes.set(f"{self.array_prefix}{name}", list(array.shape))

    def delete_array(self, name: str) -> None:
        self._unstored_arrays().pop(name)
        self.base.attributes.delete(f"{self.array_prefix}{name}")

    def get_array(self, name: str | None = None) -> np.ndarray:
        if name is None:
            names = self.get_arraynames()
            if len(names) != 1:
                raise ValueError("`name` not specified and the node does not hold exactly one array")
            name = names[0]
        if not self.is_stored:
            return self._unstored_arrays()[name]
        if not self._cached_arrays:
            with self.base.repository.open(ARRAYS_OBJECT, mode="rb") as handle, np.load(handle) as archive:
                self._cached_arrays = {key: archive[key] for key in archive.files}
        return self._cached_arrays[name]

    def store(self, *args, **kwargs):
        if not self.is_stored:
            import io

            buffer = io.BytesIO()
            np.savez(buffer, **self._unstored_arrays())  # type: ignore[arg-type]
            buffer.seek(0)
            self.base.repository.put_object_from_filelike(buffer, ARRAYS_OBJECT)  # type: ignore[arg-type]
            self._cached_arrays = dict(self._unstored_arrays())
        return super().store(*args, **kwargs)

    def _arraynames_from_files(self) -> list[str]:
        """The arrays in the ``.npz`` (ArrayData's consistency check compares them with the shape attributes)."""
        if self.is_stored or ARRAYS_OBJECT in self.base.repository.list_object_names():
            return list(self._cached_arrays) if self._cached_arrays else self._arraynames_from_properties()
        return list(self._unstored_arrays())

    def _unstored_arrays(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_pending_arrays"):
            self._pending_arrays: dict[str, np.ndarray] = {}
        return self._pending_arrays

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
        node.finalise()
        return node

    def finalise(self) -> None:
        """Fingerprints and the summary attributes, from the arrays."""
        from ase.data import chemical_symbols

        arrays = {name: self.get_array(name) for name in ("atom_offsets", "numbers", "positions", "cells", "pbc")}
        self.set_array(
            "fingerprints",
            fingerprints(
                arrays["atom_offsets"], arrays["numbers"], arrays["positions"], arrays["cells"], arrays["pbc"]
            ),
        )
        self.base.attributes.set("num_structures", len(arrays["cells"]))
        self.base.attributes.set("num_atoms", int(arrays["atom_offsets"][-1]))
        self.base.attributes.set("elements", sorted({chemical_symbols[z] for z in np.unique(arrays["numbers"])}))

    @classmethod
    def gather(cls: type[SetType], parts: Sequence[tuple[StructureSetData, Sequence[int] | np.ndarray]]) -> SetType:
        """A new set with the given rows of the given sets (of this class), in that order; array by array."""
        if not parts or not any(len(rows) for _, rows in parts):
            raise ValueError("gather needs at least one row")
        names = sorted(set(parts[0][0].get_arraynames()) - {"atom_offsets", "fingerprints"})
        used = [(node, np.asarray(rows, dtype=int)) for node, rows in parts if len(rows)]
        loaded = load_arrays([node for node, _ in used], [*names, "atom_offsets"])
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
        sizes: list[np.ndarray] = []
        for (_, rows), arrays in zip(used, loaded, strict=True):
            offsets = arrays["atom_offsets"]
            starts, stops = offsets[rows], offsets[rows + 1]
            atom_rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
            sizes.append(stops - starts)
            for name in names:
                array = arrays[name]
                pieces[name].append(array[atom_rows] if name in PER_ATOM_ARRAYS else array[rows])
        result = cls()
        result.set_array("atom_offsets", np.concatenate([[0], np.cumsum(np.concatenate(sizes))]))
        for name, chunks in pieces.items():
            result.set_array(name, np.concatenate(chunks))
        result.finalise()
        sources = result.get_array("source") if "source" in names else None
        if sources is not None:
            values, counts = np.unique(sources, return_counts=True)
            result.base.attributes.set("sources", {str(v): int(c) for v, c in zip(values, counts, strict=True)})
        return result

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
        """ASE ``Atoms``, with ``structure_uuid`` and ``config_type`` in ``info`` where they are set.

        Empty values are left out: an empty string in an extended XYZ comment line makes ASE read the next key as
        its value (mace_run_train then never saw ``config_type``)."""
        from ase import Atoms

        offsets = self.get_array("atom_offsets")
        numbers, positions = self.get_array("numbers"), self.get_array("positions")
        cells, pbc = self.get_array("cells"), self.get_array("pbc")
        uuids, config_types = self.get_array("structure_uuids"), self.get_array("config_type")
        structures = []
        for index in range(len(self)):
            rows = slice(offsets[index], offsets[index + 1])
            atoms = Atoms(numbers=numbers[rows], positions=positions[rows], cell=cells[index], pbc=pbc[index])
            for key, value in (("structure_uuid", str(uuids[index])), ("config_type", str(config_types[index]))):
                if value:
                    atoms.info[key] = value
            structures.append(atoms)
        return structures
