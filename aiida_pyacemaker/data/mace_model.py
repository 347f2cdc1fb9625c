"""``MaceModelData``: a MACE model file in the provenance graph, deduplicated by its sha256."""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

from aiida import orm

_CHUNK = 1 << 20


def file_sha256(path: str | pathlib.Path) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class NotAMaceModelError(ValueError):
    """A file that is no MACE model (unreadable by torch, or a torch object without MACE's attributes)."""


def read_model_metadata(path: str | pathlib.Path) -> dict[str, Any]:
    """Architecture, z-table, r_max, dtype and size of a MACE model file (loads it on the CPU).

    Raises ``NotAMaceModelError`` naming the file when it cannot be read as a MACE model.
    """
    import torch
    from ase.data import chemical_symbols

    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exception:
        raise NotAMaceModelError(
            f"{path} is not a MACE model file: torch cannot load it ({type(exception).__name__}: {exception})"
        ) from exception
    missing = [name for name in ("atomic_numbers", "r_max", "parameters") if not hasattr(model, name)]
    if missing:
        raise NotAMaceModelError(
            f"{path} is not a MACE model: it holds a {type(model).__name__} without {missing} "
            "(a checkpoint or state dict? give the `.model` file that mace_run_train writes)"
        )
    numbers = [int(z) for z in model.atomic_numbers]
    parameters = list(model.parameters())
    return {
        "architecture": type(model).__name__,
        "atomic_numbers": numbers,
        "elements": [chemical_symbols[z] for z in numbers],
        "r_max": float(model.r_max),
        "dtype": str(parameters[0].dtype).replace("torch.", "") if parameters else "unknown",
        "num_parameters": int(sum(p.numel() for p in parameters)),
        "heads": list(getattr(model, "heads", None) or ["Default"]),
    }


class MaceModelData(orm.SinglefileData):
    """A MACE model file with its sha256, architecture, elements (z-table), r_max and dtype as attributes.

    Create it with :meth:`from_file`: storing the same file again returns the node that already holds it.
    """

    @classmethod
    def from_file(
        cls, path: str | pathlib.Path, label: str | None = None, store: bool = True, deduplicate: bool = True
    ) -> MaceModelData:
        """Return the stored node holding the file at ``path``, creating it when it is new.

        ``deduplicate=False`` always makes a new node (a parser must create its outputs, never reuse a node).
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no MACE model file at {path}")
        sha256 = file_sha256(path)
        if deduplicate:
            query = orm.QueryBuilder().append(cls, filters={"attributes.sha256": sha256}, subclassing=False)
            existing = query.first(flat=True)
            if existing is not None:
                return existing
        node = cls(file=path.resolve(), filename=path.name)
        node.base.attributes.set("sha256", sha256)
        for key, value in read_model_metadata(path).items():
            node.base.attributes.set(key, value)
        if label:
            node.label = label
        return node.store() if store else node

    @property
    def sha256(self) -> str:
        return self.base.attributes.get("sha256")

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get("elements")

    @property
    def atomic_numbers(self) -> list[int]:
        return self.base.attributes.get("atomic_numbers")

    @property
    def r_max(self) -> float:
        return self.base.attributes.get("r_max")

    @property
    def dtype(self) -> str:
        return self.base.attributes.get("dtype")

    @property
    def architecture(self) -> str:
        return self.base.attributes.get("architecture")


def fetch_foundation_model(model: str = "small") -> MaceModelData:
    """Download a MACE-MP foundation model (needs the internet) and store it as a ``MaceModelData``.

    ``model`` is a name that ``mace.calculators.foundations_models`` knows (``small``, ``medium``, ...). Offline,
    train a model yourself (``scripts/build_tiny_committee.py``) and use :meth:`MaceModelData.from_file`.
    """
    from mace.calculators.foundations_models import download_mace_mp_checkpoint

    try:
        path = download_mace_mp_checkpoint(model)
    except Exception as exception:
        raise ConnectionError(
            f"could not download the MACE-MP model `{model}` ({exception}); without internet access use "
            "MaceModelData.from_file with a local model file"
        ) from exception
    return MaceModelData.from_file(path, label=f"mace-mp-{model}")
