"""Restart wrapper of ``EvaluateCalculation``."""

from .base import EvaluateBaseWorkChain

__all__ = ("EvaluateBaseWorkChain",)
