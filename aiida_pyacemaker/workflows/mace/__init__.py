"""Restart wrapper of ``MaceCalculation``."""

from .base import MaceBaseWorkChain

__all__ = ("MaceBaseWorkChain",)
