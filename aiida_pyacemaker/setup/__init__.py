"""Idempotent set-up of a working environment: Quantum ESPRESSO, profile, computer, codes, pseudos, daemon."""

from .steps import SetupOptions, StepResult, run_setup

__all__ = ("SetupOptions", "StepResult", "run_setup")
