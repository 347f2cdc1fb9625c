"""Restart wrapper of ``AceMdCalculation``."""

from .base import AceMdBaseWorkChain

__all__ = ("AceMdBaseWorkChain",)
