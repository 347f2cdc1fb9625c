"""Data types of aiida-pyacemaker."""

from .ace_potential import AcePotentialData
from .committee_results import MaceResultsData
from .labelled_structures import LabelledStructuresData
from .mace_model import MaceModelData, fetch_foundation_model
from .structure_set import StructureSetData

__all__ = (
    "AcePotentialData",
    "LabelledStructuresData",
    "MaceModelData",
    "MaceResultsData",
    "StructureSetData",
    "fetch_foundation_model",
)
