"""The DFT tier: aiida-quantumespresso's ``PwBaseWorkChain`` set up from a structure and a pseudopotential family,
and the unit conversion of its results.

Settings derived from the structure and the family, never an element's constant: the cutoffs of the family at a
chosen stringency, and the number of bands from the valence electrons of the family's pseudopotentials (enough
empty bands that smearing never makes pw.x restart, for metals and insulators alike).

Units of the plugin: energy in eV, forces in eV/A, stress in eV/A^3 with ASE's sign convention (a compressed cell
has a negative diagonal). Quantum ESPRESSO prints the stress with the opposite sign (positive pressure under
compression), in GPa through aiida-quantumespresso's parser.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .protocols import QE_PROTOCOLS, recursive_merge
from .setup.pseudos import DEFAULT_FAMILY

if TYPE_CHECKING:
    from aiida.engine import ProcessBuilder
    from aiida.orm import Code, StructureData, WorkChainNode

#: 1 GPa in eV/A^3.
GPA_IN_EV_PER_A3 = 1.0 / 160.21766208
#: Bands: at least this factor times the occupied bands, and at least this many empty bands.
BANDS_FACTOR = 1.5
MIN_EMPTY_BANDS = 8


def number_of_bands(structure: StructureData, pseudo_family: str = DEFAULT_FAMILY) -> int:
    """Bands for an SCF with smearing: max(1.5 x occupied, occupied + 8), occupied from the valence electrons."""
    from aiida.orm import load_group

    return bands_for_pseudos(structure, load_group(pseudo_family).get_pseudos(structure=structure))


def bands_for_pseudos(structure: StructureData, pseudos: dict[str, Any]) -> int:
    """``number_of_bands`` from the pseudopotentials by kind name (as in ``PwBaseWorkChain``'s ``pw.pseudos``)."""
    electrons = sum(pseudos[site.kind_name].z_valence for site in structure.sites)
    occupied = electrons / 2
    return math.ceil(max(BANDS_FACTOR * occupied, occupied + MIN_EMPTY_BANDS))


def dft_overrides(
    structure: StructureData, pseudo_family: str = DEFAULT_FAMILY, stringency: str | None = None
) -> dict[str, Any]:
    """``PwBaseWorkChain`` protocol overrides for ``structure``: family, SCF with forces and stress, bands, cutoffs.

    ``stringency`` picks a cutoff set of the family (``normal`` or ``low``); by default the family's own default.
    """
    from aiida.orm import load_group

    system: dict[str, Any] = {"nbnd": number_of_bands(structure, pseudo_family)}
    if stringency is not None:
        family = load_group(pseudo_family)
        wfc, rho = family.get_recommended_cutoffs(structure=structure, stringency=stringency, unit="Ry")
        system.update(ecutwfc=wfc, ecutrho=rho)
    return {
        "pseudo_family": pseudo_family,
        "pw": {"parameters": {"CONTROL": {"tprnfor": True, "tstress": True}, "SYSTEM": system}},
    }


def get_pw_builder(
    code: Code,
    structure: StructureData,
    pseudo_family: str = DEFAULT_FAMILY,
    protocol: str = "fast",
    stringency: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> ProcessBuilder:
    """A ``PwBaseWorkChain`` builder for an SCF with forces and stress on ``structure``.

    ``protocol`` is the plugin's (fast, balanced, stringent), mapped to aiida-quantumespresso's. MPI follows the
    code: a code registered with ``with_mpi=False`` runs serially.
    """
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    defaults = dft_overrides(structure, pseudo_family, stringency)
    if code.with_mpi is not None:
        defaults["pw"]["metadata"] = {"options": {"withmpi": code.with_mpi}}
    return PwBaseWorkChain.get_builder_from_protocol(
        code, structure, protocol=QE_PROTOCOLS[protocol], overrides=recursive_merge(defaults, overrides or {})
    )


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
