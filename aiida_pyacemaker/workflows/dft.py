"""The DFT tier: inputs for aiida-quantumespresso's ``PwBaseWorkChain`` and unit conversion of its results.

Units of the plugin: energy in eV, forces in eV/A, stress in eV/A^3 with ASE's sign convention (a compressed cell
has a negative diagonal). Quantum ESPRESSO prints the stress with the opposite sign (positive pressure under
compression), in GPa through aiida-quantumespresso's parser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..setup.pseudos import DEFAULT_FAMILY

if TYPE_CHECKING:
    from aiida.engine import ProcessBuilder
    from aiida.orm import Code, StructureData, WorkChainNode

#: 1 GPa in eV/A^3.
GPA_IN_EV_PER_A3 = 1.0 / 160.21766208


def _merge(base: dict, extra: dict) -> dict:
    """Recursively merge ``extra`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in extra.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if nested else value
    return merged


def get_pw_builder(
    code: Code,
    structure: StructureData,
    pseudo_family: str = DEFAULT_FAMILY,
    protocol: str = "fast",
    stringency: str | None = None,
    overrides: dict[str, Any] | None = None,
    max_wallclock_seconds: int = 1800,
) -> ProcessBuilder:
    """A ``PwBaseWorkChain`` builder for an SCF with forces and stress on ``structure``.

    ``stringency`` picks a cutoff set of the family (``normal`` or ``low``); by default the family's own default.
    MPI follows the code: a code registered with ``with_mpi=False`` runs serially.
    """
    from aiida.orm import load_group
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    pw_options: dict[str, Any] = {"max_wallclock_seconds": max_wallclock_seconds}
    if code.with_mpi is not None:
        pw_options["withmpi"] = code.with_mpi
    defaults: dict[str, Any] = {
        "pseudo_family": pseudo_family,
        "pw": {
            "metadata": {"options": pw_options},
            "parameters": {"CONTROL": {"tprnfor": True, "tstress": True}},
        },
    }
    if stringency is not None:
        family = load_group(pseudo_family)
        wfc, rho = family.get_recommended_cutoffs(structure=structure, stringency=stringency, unit="Ry")
        defaults["pw"]["parameters"]["SYSTEM"] = {"ecutwfc": wfc, "ecutrho": rho}
    return PwBaseWorkChain.get_builder_from_protocol(
        code, structure, protocol=protocol, overrides=_merge(defaults, overrides or {})
    )


def get_pw_tier_inputs(code: Code, structure: StructureData, **kwargs: Any) -> dict[str, Any]:
    """``PwBaseWorkChain`` inputs for the DFT tier of ``TieredOracleWorkChain`` (its ``dft`` namespace).

    Built like :func:`get_pw_builder` from a representative ``structure`` (its elements set the cutoffs); the
    structure itself is left out, the work chain sets it per row. k-points follow ``kpoints_distance``.
    """
    inputs = get_pw_builder(code, structure, **kwargs)._inputs(prune=True)
    inputs["pw"].pop("structure")
    return inputs


def pw_label(node: WorkChainNode) -> dict[str, Any]:
    """Energy (eV), forces (eV/A) and stress (eV/A^3) of a finished ``PwBaseWorkChain`` or ``PwCalculation``."""
    return pw_label_from_outputs(node.outputs.output_parameters, node.outputs.output_trajectory)


def pw_label_from_outputs(parameters, trajectory) -> dict[str, Any]:
    """The same label from the ``output_parameters`` and ``output_trajectory`` nodes."""
    energy = float(parameters["energy"])
    forces = np.asarray(trajectory.get_array("forces")[-1], dtype=float)
    label: dict[str, Any] = {"energy": energy, "forces": forces}
    if "stress" in trajectory.get_arraynames():
        label["stress"] = -np.asarray(trajectory.get_array("stress")[-1], dtype=float) * GPA_IN_EV_PER_A3
    return label
