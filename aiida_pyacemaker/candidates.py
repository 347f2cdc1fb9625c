"""Candidate structures for the distillation loop: seeded perturbation policies around prototype structures.

Policies (each makes ``per_prototype`` structures from every prototype; ``config_type`` is the policy's name):

- ``rattle``: Gaussian displacements of every atom (the seed's RandomRattlePolicy); ``stdev`` in A.
- ``strain``: a random symmetric strain of at most ``max_strain`` per component, then a rattle.
- ``vacancy``: one atom removed at random, then a rattle.

``stdev`` is a range ``[low, high]`` (A): each structure draws its own value, so that the pool spans easy and hard
structures for the committee. The same prototypes, policies and seed give the same structures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Allowed keys of each policy, with a check of the value and what the check expects.
POLICY_KEYS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "rattle": {},
    "strain": {"max_strain": (lambda v: _is_number(v) and 0 <= v < 0.5, "a number in [0, 0.5)")},
    "vacancy": {},
}
COMMON_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "per_prototype": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "stdev": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v) and 0 <= v[0] <= v[1],
        "[low, high] with 0 <= low <= high (A)",
    ),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def validate_policies(policies: Any, prefix: str = "policies") -> str | None:
    """An error message naming the key and the allowed values, or ``None`` when ``policies`` is usable."""
    if not isinstance(policies, dict) or not policies:
        return f"{prefix}: give a mapping of policy name to settings; allowed names: {sorted(POLICY_KEYS)}"
    for name, settings in policies.items():
        if name not in POLICY_KEYS:
            return f"{prefix}.{name}: unknown policy; allowed: {sorted(POLICY_KEYS)}"
        allowed = {**COMMON_KEYS, **POLICY_KEYS[name]}
        if not isinstance(settings, dict):
            return f"{prefix}.{name}: give a mapping with the keys {sorted(allowed)}"
        for key, value in settings.items():
            if key not in allowed:
                return f"{prefix}.{name}.{key}: unknown key; allowed: {sorted(allowed)}"
            check, expected = allowed[key]
            if not check(value):
                return f"{prefix}.{name}.{key}: expected {expected}, got {value!r}"
        if missing := sorted(set(allowed) - set(settings)):
            return f"{prefix}.{name}: missing {missing}"
    if sum(settings["per_prototype"] for settings in policies.values()) == 0:
        return f"{prefix}: every per_prototype is 0, so no candidate would be made"
    return None


def _rattled(atoms, rng: np.random.Generator, stdev: Sequence[float]):
    low, high = stdev
    atoms.positions += rng.normal(scale=rng.uniform(low, high), size=atoms.positions.shape)
    return atoms


def _perturb(prototype, policy: str, settings: dict[str, Any], rng: np.random.Generator):
    atoms = prototype.copy()
    if policy == "strain":
        strain = rng.uniform(-settings["max_strain"], settings["max_strain"], size=(3, 3))
        atoms.set_cell(atoms.cell @ (np.eye(3) + (strain + strain.T) / 2), scale_atoms=True)
    elif policy == "vacancy" and len(atoms) > 1:
        del atoms[int(rng.integers(len(atoms)))]
    atoms = _rattled(atoms, rng, settings["stdev"])
    atoms.info = {"config_type": policy}
    return atoms


def make_candidates(prototypes: Sequence, policies: dict[str, dict[str, Any]], seed: int) -> list:
    """ASE ``Atoms`` made from ``prototypes`` by every policy, in a reproducible order."""
    rng = np.random.default_rng(seed)
    return [
        _perturb(prototype, policy, settings, rng)
        for policy, settings in sorted(policies.items())
        for prototype in prototypes
        for _ in range(settings["per_prototype"])
    ]
