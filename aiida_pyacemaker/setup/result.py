"""The record that every set-up step returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepResult:
    """What one set-up step did: ``changed`` is False when everything was already in place."""

    name: str
    changed: bool
    message: str

    def line(self) -> str:
        """A one-line human-readable summary."""
        tag = "created" if self.changed else "exists "
        return f"[{tag}] {self.name}: {self.message}"
