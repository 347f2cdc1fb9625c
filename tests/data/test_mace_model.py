"""``MaceModelData``: a clear error at node creation for a file that is no MACE model."""

from __future__ import annotations

import pytest

from aiida_pyacemaker.data import MaceModelData
from aiida_pyacemaker.data.mace_model import NotAMaceModelError


def test_garbage_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "broken.model"
    path.write_bytes(b"this is not a torch file\x00\x01")
    with pytest.raises(NotAMaceModelError, match=r"broken.model is not a MACE model file: torch cannot load it"):
        MaceModelData.from_file(path)


def test_a_torch_file_without_a_model_is_refused(tmp_path):
    import torch

    path = tmp_path / "state.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(NotAMaceModelError, match=r"holds a dict without \['atomic_numbers', 'r_max', 'parameters'\]"):
        MaceModelData.from_file(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MACE model file at"):
        MaceModelData.from_file(tmp_path / "nowhere.model")


def test_the_committed_model_reads_its_metadata(tiny_committee):
    model = tiny_committee["m0"]
    assert model.elements == ["Si"] and model.r_max == pytest.approx(4.5) and model.dtype == "float64"
    assert len(model.sha256) == 64
