"""Phase 2: the physics of a potential, from the labels of a few structures built around a prototype crystal.

One piece of code for every engine (ACE, the teacher, DFT): the structures come from here, an engine labels them
(relaxing the ions of the rows flagged ``relax``), and the properties are computed here from the labels.

Two stages, so that every engine is strained around its own equilibrium:

1. ``eos_structures``: the primitive cell at ``eos_points`` volumes within +-``eos_span`` (fixed fractional
   coordinates); ``fit_eos`` fits Birch-Murnaghan (ASE): V0, E0, B0, B0', and the lattice constant a0 of the
   conventional cell.
2. ``property_structures`` at that a0: finite strains +-``strain`` (xx and yz) with relaxed ions for C11, C12, C44;
   phonopy's displaced supercells for the phonons; a perfect and a one-vacancy supercell (ions relaxed) for the
   vacancy formation energy.

Elastic constants assume cubic axes along x, y, z (the standardised primitive cell of a cubic crystal): C11 and C12
from the stress under an xx strain, C44 from the stress under a yz shear; Born stability of a cubic crystal.
Energies of one engine are differences at fixed composition, so each engine's own energy zero drops out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GPA_PER_EV_PER_A3 = 160.21766208
THZ_IMAGINARY = -0.1  # frequencies below this (THz, phonopy's negative = imaginary) are flagged

DEFAULT_SETTINGS: dict[str, Any] = {
    "eos_points": 7,
    "eos_span": 0.06,
    "strain": 0.01,
    "phonon_supercell": [2, 2, 2],
    "phonon_displacement": 0.01,
    "phonon_mesh": [16, 16, 16],
    "band_points": 60,
    "vacancy_supercell": [2, 2, 2],
    # what DFT computes (the EOS always): phonons and the vacancy cost supercells; where DFT leaves a property out,
    # the teacher is the reference of that row, and the table says so
    "dft_properties": ["elastic", "phonons", "vacancy"],
}
STAGE_2_PROPERTIES = ("elastic", "phonons", "vacancy")


def settings_with_defaults(settings: dict[str, Any] | None) -> dict[str, Any]:
    merged = {**DEFAULT_SETTINGS, **(settings or {})}
    if unknown := sorted(set(merged) - set(DEFAULT_SETTINGS)):
        raise ValueError(f"unknown validation settings {unknown}; allowed: {sorted(DEFAULT_SETTINGS)}")
    return merged


def validate_settings(settings: dict[str, Any]) -> str | None:
    """A message for settings that cannot give the properties, else ``None``."""
    try:
        merged = settings_with_defaults(settings)
    except ValueError as error:
        return str(error)
    if not isinstance(merged["eos_points"], int) or merged["eos_points"] < 5:
        return f"eos_points must be an integer >= 5, got {merged['eos_points']!r}"
    if not 0.01 <= float(merged["eos_span"]) <= 0.2:
        return f"eos_span must be within [0.01, 0.2] (a fraction of the volume), got {merged['eos_span']!r}"
    if not 0.001 <= float(merged["strain"]) <= 0.03:
        return f"strain must be within [0.001, 0.03], got {merged['strain']!r}"
    chosen = merged["dft_properties"]
    if not isinstance(chosen, list) or not set(chosen) <= set(STAGE_2_PROPERTIES):
        return f"dft_properties must be a list of {list(STAGE_2_PROPERTIES)}, got {chosen!r}"
    for key in ("phonon_supercell", "vacancy_supercell", "phonon_mesh"):
        value = merged[key]
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and v >= 1 for v in value)):
            return f"{key} must be three integers >= 1, got {value!r}"
    return None


def standard_cells(prototype):
    """(primitive, conventional) standardised cells of ``prototype`` (spglib), axes along the conventional ones."""
    import spglib
    from ase import Atoms

    cell = (prototype.cell.array, prototype.get_scaled_positions(), prototype.numbers)
    cells = []
    for to_primitive in (True, False):
        standard = spglib.standardize_cell(cell, to_primitive=to_primitive, symprec=1e-3)
        if standard is None:
            raise ValueError(f"spglib cannot standardise the prototype {prototype.get_chemical_formula()}")
        lattice, positions, numbers = standard
        cells.append(Atoms(numbers=numbers, scaled_positions=positions, cell=lattice, pbc=True))
    return cells[0], cells[1]


def _tag(atoms, task: str, value: float = 0.0, relax: bool = False):
    atoms.info.update(task=task, task_value=float(value), relax=bool(relax))
    return atoms


def eos_structures(prototype, settings: dict[str, Any] | None = None) -> list:
    """Stage 1: the primitive cell scaled to ``eos_points`` volumes within +-``eos_span``."""
    settings = settings_with_defaults(settings)
    primitive, _ = standard_cells(prototype)
    structures = []
    for factor in np.linspace(1 - settings["eos_span"], 1 + settings["eos_span"], settings["eos_points"]):
        atoms = primitive.copy()
        atoms.set_cell(primitive.cell * factor ** (1 / 3), scale_atoms=True)
        structures.append(_tag(atoms, "eos", factor))
    return structures


def fit_eos(volumes: Sequence[float], energies: Sequence[float], atoms_per_cell: int) -> dict[str, Any]:
    """Birch-Murnaghan through ASE: V0 and E0 per atom, B0 (GPa), B0'."""
    from ase.eos import EquationOfState

    eos = EquationOfState(np.asarray(volumes), np.asarray(energies), eos="birchmurnaghan")
    v0, e0, b0 = eos.fit()
    derivative = float(eos.eos_parameters[2]) if getattr(eos, "eos_parameters", None) is not None else float("nan")
    return {
        "volume_per_atom": float(v0) / atoms_per_cell,
        "energy_per_atom": float(e0) / atoms_per_cell,
        "bulk_modulus_gpa": float(b0) * GPA_PER_EV_PER_A3,
        "bulk_modulus_derivative": derivative,
    }


def scaled_to_volume(prototype, volume_per_atom: float):
    """(primitive, conventional) cells of ``prototype`` scaled to ``volume_per_atom``."""
    primitive, conventional = standard_cells(prototype)
    for atoms in (primitive, conventional):
        atoms.set_cell(atoms.cell * (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    return primitive, conventional


def strained(atoms, strain: np.ndarray):
    """``atoms`` deformed by the symmetric strain tensor (cell rows times 1 + strain), atoms carried along."""
    deformed = atoms.copy()
    deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return deformed


def elastic_strains(delta: float) -> dict[str, np.ndarray]:
    """The four strains: +-delta along xx, and +-delta engineering shear in yz."""
    strains = {}
    for sign, name in ((1, "plus"), (-1, "minus")):
        normal = np.zeros((3, 3))
        normal[0, 0] = sign * delta
        shear = np.zeros((3, 3))
        shear[1, 2] = shear[2, 1] = sign * delta / 2
        strains[f"xx_{name}"] = normal
        strains[f"yz_{name}"] = shear
    return strains


def phonopy_object(primitive, settings: dict[str, Any]):
    """A ``Phonopy`` on ``primitive`` with the supercell and displacements of ``settings`` (deterministic)."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unitcell = PhonopyAtoms(
        symbols=primitive.get_chemical_symbols(),
        cell=primitive.cell.array,
        scaled_positions=primitive.get_scaled_positions(),
    )
    phonon = Phonopy(unitcell, supercell_matrix=np.diag(settings["phonon_supercell"]), primitive_matrix=None)
    phonon.generate_displacements(distance=settings["phonon_displacement"])
    return phonon


def property_structures(
    prototype, volume_per_atom: float, settings: dict[str, Any] | None = None, which: Sequence[str] = STAGE_2_PROPERTIES
) -> list:
    """Stage 2 around the engine's own equilibrium volume: strains (``elastic``), phonon displacements
    (``phonons``), vacancy supercells (``vacancy``), for the properties in ``which``."""
    from ase import Atoms

    settings = settings_with_defaults(settings)
    primitive, _ = scaled_to_volume(prototype, volume_per_atom)
    structures = []
    if "elastic" in which:
        structures += [
            _tag(strained(primitive, strain), f"strain_{name}", settings["strain"], relax=True)
            for name, strain in elastic_strains(settings["strain"]).items()
        ]
    if "phonons" in which:
        phonon = phonopy_object(primitive, settings)
        for index, supercell in enumerate(phonon.supercells_with_displacements):
            atoms = Atoms(
                symbols=supercell.symbols, cell=supercell.cell, scaled_positions=supercell.scaled_positions, pbc=True
            )
            structures.append(_tag(atoms, "phonon", index))
    if "vacancy" in which:
        bulk = primitive.repeat(tuple(settings["vacancy_supercell"]))
        structures.append(_tag(bulk.copy(), "vacancy_bulk"))
        vacancy = bulk.copy()
        del vacancy[0]
        structures.append(_tag(vacancy, "vacancy", relax=True))
    return structures


def elastic_constants(stress: dict[str, np.ndarray], delta: float) -> dict[str, Any]:
    """C11, C12, C44 (GPa) by central differences of the stress (3x3, eV/A^3, ASE's sign); Born stability (cubic)."""

    def slope(component: tuple[int, int], kind: str, strain: float) -> float:
        plus, minus = stress[f"{kind}_plus"][component], stress[f"{kind}_minus"][component]
        return float((plus - minus) / (2 * strain)) * GPA_PER_EV_PER_A3

    c11, c12, c44 = slope((0, 0), "xx", delta), slope((1, 1), "xx", delta), slope((1, 2), "yz", delta)
    return {
        "c11_gpa": c11,
        "c12_gpa": c12,
        "c44_gpa": c44,
        "born_stable": bool(c11 - c12 > 0 and c11 + 2 * c12 > 0 and c44 > 0),
    }


def phonons(primitive, forces: Sequence[np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
    """Band structure on the standard path of the primitive cell (ASE's special points), DOS, imaginary modes."""
    phonon = phonopy_object(primitive, settings)
    phonon.forces = [np.asarray(f, dtype=float) for f in forces]
    phonon.produce_force_constants()
    path = primitive.cell.bandpath(npoints=settings["band_points"])
    phonon.run_band_structure([path.kpts])
    frequencies = np.asarray(phonon.get_band_structure_dict()["frequencies"][0])  # (q, bands) THz
    phonon.run_mesh(settings["phonon_mesh"])
    phonon.run_total_dos()
    dos = phonon.get_total_dos_dict()
    x, special_x, labels = path.get_linear_kpoint_axis()
    optical = frequencies[0, 3:] if frequencies.shape[1] > 3 else frequencies[0]
    return {
        "band_frequencies_thz": frequencies,
        "band_x": np.asarray(x),
        "band_special_x": np.asarray(special_x),
        "band_labels": list(labels),
        "dos_frequencies_thz": np.asarray(dos["frequency_points"]),
        "dos": np.asarray(dos["total_dos"]),
        "max_frequency_thz": float(frequencies.max()),
        "gamma_optical_thz": float(optical.max()),
        "min_frequency_thz": float(frequencies.min()),
        "imaginary_modes": bool(frequencies.min() < THZ_IMAGINARY),
    }


def vacancy_formation_energy(bulk_energy: float, bulk_atoms: int, vacancy_energy: float) -> float:
    """E_f = E(N-1, relaxed) - (N-1)/N E(N) (eV)."""
    return float(vacancy_energy - (bulk_atoms - 1) / bulk_atoms * bulk_energy)


def compute_properties(
    prototype, eos_rows: list, property_rows: list, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every property of one engine from its labelled stage-1 and stage-2 structures (ASE ``Atoms`` whose
    ``info`` has ``task``, with a calculator carrying energy, forces and stress)."""
    settings = settings_with_defaults(settings)
    conventional = standard_cells(prototype)[1]
    volumes = [atoms.get_volume() for atoms in eos_rows]
    energies = [atoms.get_potential_energy() for atoms in eos_rows]
    eos = fit_eos(volumes, energies, len(eos_rows[0]))
    scale = (eos["volume_per_atom"] * len(conventional) / conventional.get_volume()) ** (1 / 3)
    result: dict[str, Any] = {
        **eos,
        "lattice_constant": float(conventional.cell.lengths()[0] * scale),
        "eos_volumes_per_atom": np.asarray(volumes) / len(eos_rows[0]),
        "eos_energies_per_atom": np.asarray(energies) / len(eos_rows[0]),
    }
    by_task: dict[str, list] = {}
    for atoms in property_rows:
        by_task.setdefault(str(atoms.info["task"]), []).append(atoms)
    stress = {
        task.removeprefix("strain_"): rows[0].get_stress(voigt=False)
        for task, rows in by_task.items()
        if task.startswith("strain_")
    }
    if stress:
        result.update(elastic_constants(stress, settings["strain"]))
    if "phonon" in by_task:
        primitive_at_v0, _ = scaled_to_volume(prototype, eos["volume_per_atom"])
        displaced = sorted(by_task["phonon"], key=lambda atoms: atoms.info["task_value"])
        result.update(phonons(primitive_at_v0, [atoms.get_forces() for atoms in displaced], settings))
    if "vacancy" in by_task:
        bulk, vacancy = by_task["vacancy_bulk"][0], by_task["vacancy"][0]
        result["vacancy_formation_energy"] = vacancy_formation_energy(
            bulk.get_potential_energy(), len(bulk), vacancy.get_potential_energy()
        )
        result["vacancy_supercell_atoms"] = len(bulk)
    return result


#: The rows of the comparison table: (key, label, unit).
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("lattice_constant", "lattice constant a0", "A"),
    ("bulk_modulus_gpa", "bulk modulus B0", "GPa"),
    ("bulk_modulus_derivative", "B0'", ""),
    ("c11_gpa", "C11", "GPa"),
    ("c12_gpa", "C12", "GPa"),
    ("c44_gpa", "C44", "GPa"),
    ("max_frequency_thz", "highest phonon frequency", "THz"),
    ("gamma_optical_thz", "optical phonon at Gamma", "THz"),
    ("vacancy_formation_energy", "vacancy formation energy", "eV"),
)


def comparison_table(properties: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per property: the value of every engine (``ace``, ``teacher``, ``dft``) and the relative errors (%)
    against the row's ``reference``: DFT where it computed the property, else the teacher."""
    rows = []
    for key, label, unit in TABLE_ROWS:
        row: dict[str, Any] = {"property": key, "label": label, "unit": unit}
        for engine, values in properties.items():
            row[engine] = float(values[key]) if key in values else None
        reference_engine = next((e for e in ("dft", "teacher") if row.get(e) is not None), None)
        row["reference"] = reference_engine
        reference = row.get(reference_engine) if reference_engine else None
        for engine in properties:
            if engine == reference_engine:
                continue
            value = row.get(engine)
            error = None
            if value is not None and reference and np.isfinite([value, reference]).all():
                error = 100.0 * (value - reference) / abs(reference)
            row[f"{engine}_error_pct"] = error
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], engines: Sequence[str]) -> str:
    """The table as aligned text (what ``aiida-pyacemaker validate`` and the README job print): the values, the
    relative errors of ACE and the teacher (%), and the reference each row is measured against."""
    errors = [engine for engine in ("ace", "teacher") if engine in engines]
    header = f"{'property':<28}{'unit':>5}" + "".join(f"{e:>10}" for e in engines)
    header += "".join(f"{e + ' err%':>13}" for e in errors) + f"{'vs':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        line = f"{row['label']:<28}{row['unit']:>5}"
        line += "".join(f"{row[e]:>10.3f}" if row.get(e) is not None else f"{'-':>10}" for e in engines)
        line += "".join(
            f"{row[f'{e}_error_pct']:>+13.2f}" if row.get(f"{e}_error_pct") is not None else f"{'-':>13}"
            for e in errors
        )
        lines.append(line + f"{row.get('reference') or '-':>9}")
    return "\n".join(lines)


def format_md(md: dict[str, Any]) -> str:
    """The MD stability verdict of the ACE potential as one line."""
    drift = md.get("md_nve_drift_mev_per_atom_per_ps")
    return (
        f"MD stability (ACE, {md['md_atoms']} atoms, {md['md_temperatures']} K): "
        + ("stable" if md["md_stable"] else f"UNSTABLE ({md['md_stop_reason']})")
        + f" for {md['md_stable_ps']:.2f} ps, largest gamma {md['md_max_gamma']:.2f}"
        + (f", NVE drift {drift:.3f} meV/atom/ps" if drift is not None else "")
    )
