"""Restart wrapper of ``PacemakerCalculation``."""

from .base import PacemakerBaseWorkChain

__all__ = ("PacemakerBaseWorkChain",)
