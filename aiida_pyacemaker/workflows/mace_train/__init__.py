"""Restart wrapper of ``MaceTrainCalculation``."""

from .base import MaceTrainBaseWorkChain

__all__ = ("MaceTrainBaseWorkChain",)
