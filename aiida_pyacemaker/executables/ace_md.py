#!/usr/bin/env python
"""Molecular dynamics with an ACE potential and its extrapolation grade gamma (standalone: python-ace, ase, numpy).

It runs with the code's Python on any computer that has python-ace; it imports nothing from the plugin.

Modes (``parameters.json``, key ``mode``):

* ``explore`` (Phase 3): Langevin NVT from every start structure at every temperature. The largest per-atom gamma
  is computed every step with the potential's active set. Frames with gamma >= ``gamma_select`` are collected (at
  most one every ``select_interval`` steps); a trajectory stops at gamma >= ``gamma_stop`` (beyond it the frames
  are too far out to be worth labelling, pacemaker's active-learning practice). The collected frames are reduced
  to ``max_selected`` by D-optimality (MaxVol on the ACE projections, against the potential's active set).
* ``stability`` (Phase 2): Langevin NVT for ``steps``, then NVE (velocity Verlet) for ``nve_steps``: does the
  potential stay physical (no pair closer than ``min_distance``, finite energies, temperature below
  ``max_temperature_factor`` x the target, gamma below ``gamma_stop``), and how much does the NVE energy drift?

A start structure smaller than ``min_atoms`` is repeated (as evenly as its cell allows) until it has that many.

Files written: ``summary.json`` (one record per trajectory), ``trajectory.npz`` (time series every
``log_interval`` steps), ``selected.xyz`` (explore: the selected frames with their gamma); ``error.json`` on a fatal
error (``potential_unreadable``, ``input_unreadable``), with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

#: Every key ``parameters.json`` must give (``AceMdCalculation`` writes them all, its defaults filled in).
REQUIRED = (
    "mode",
    "temperatures",
    "steps",
    "nve_steps",
    "timestep_fs",
    "friction_per_fs",
    "gamma_select",
    "gamma_stop",
    "select_interval",
    "max_selected",
    "min_atoms",
    "min_distance",
    "max_temperature_factor",
    "log_interval",
    "seed",
)


def fail(kind: str, message: str) -> None:
    with open("error.json", "w") as handle:
        json.dump({"error": kind, "message": message[:2000]}, handle)
    print(f"{kind}: {message}", file=sys.stderr)
    sys.exit(2)


def load_calculator(yaml_path: str, asi_path: str | None):
    from pyace import PyACECalculator

    calculator = PyACECalculator(yaml_path)
    if asi_path:
        calculator.set_active_set(asi_path)
    return calculator


def repeat_to(atoms, min_atoms: int):
    """``atoms`` repeated along its shortest cell vectors until it has at least ``min_atoms`` atoms."""
    counts = np.ones(3, dtype=int)
    lengths = atoms.cell.lengths()
    while len(atoms) * counts.prod() < min_atoms:
        counts[int(np.argmin(lengths * counts))] += 1
    return atoms.repeat(tuple(int(c) for c in counts))


def largest_gamma(calculator) -> float:
    gamma = calculator.results.get("gamma")
    return float(np.max(gamma)) if gamma is not None and len(gamma) else float("nan")


def closest_pair(atoms, bound: float) -> float:
    """The shortest interatomic distance if it is below ``bound``, else ``bound``."""
    from ase.neighborlist import neighbor_list

    distances = neighbor_list("d", atoms, bound)
    return float(distances.min()) if len(distances) else bound


def run_trajectory(atoms, calculator, temperature: float, settings: dict, seed: int, label: int):
    """One trajectory; returns (record, time series, collected frames)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    rng = np.random.default_rng(seed)
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    timestep = settings["timestep_fs"] * units.fs
    nvt = Langevin(atoms, timestep, temperature_K=temperature, friction=settings["friction_per_fs"] / units.fs, rng=rng)
    explore = settings["mode"] == "explore"
    total = int(settings["steps"]) + (0 if explore else int(settings["nve_steps"]))
    series: dict[str, list[float]] = {key: [] for key in ("time_ps", "epot", "etot", "temperature", "gamma")}
    frames = []
    stop, last_collected, max_gamma, min_pair = "completed", -math.inf, 0.0, math.inf
    max_temperature = 0.0
    nve = None
    atoms.get_potential_energy()
    step = 0
    for step in range(1, total + 1):
        if step <= settings["steps"]:
            nvt.run(1)
        else:
            nve = nve or VelocityVerlet(atoms, timestep)
            nve.run(1)
        energy = atoms.get_potential_energy()
        kinetic = atoms.get_kinetic_energy()
        gamma = largest_gamma(calculator)
        current_temperature = atoms.get_temperature()
        if np.isfinite(gamma):
            max_gamma = max(max_gamma, gamma)
        max_temperature = max(max_temperature, current_temperature)
        if step % settings["log_interval"] == 0 or step == total:
            series["time_ps"].append(step * settings["timestep_fs"] / 1000)
            series["epot"].append(energy / len(atoms))
            series["etot"].append((energy + kinetic) / len(atoms))
            series["temperature"].append(current_temperature)
            series["gamma"].append(gamma)
        if not (np.isfinite(energy) and np.isfinite(atoms.get_forces()).all()):
            stop = "non_finite"
        elif current_temperature > settings["max_temperature_factor"] * temperature:
            stop = "temperature"
        elif (pair := closest_pair(atoms, settings["min_distance"])) < settings["min_distance"]:
            min_pair, stop = pair, "collapsed"
        elif np.isfinite(gamma) and gamma >= settings["gamma_stop"]:
            stop = "gamma"
        elif explore and gamma >= settings["gamma_select"] and step - last_collected >= settings["select_interval"]:
            frame = atoms.copy()
            frame.calc = None
            frame.info = {"gamma": gamma, "md_step": step, "temperature": temperature, "trajectory": label}
            frames.append(frame)
            last_collected = step
        if stop != "completed":
            break
    if min_pair == math.inf:
        min_pair = closest_pair(atoms, 5.0)
    record = {
        "trajectory": label,
        "temperature": temperature,
        "atoms": len(atoms),
        "steps": step,
        "time_ps": step * settings["timestep_fs"] / 1000,
        "stop_reason": stop,
        "max_gamma": max_gamma,
        "max_temperature": max_temperature,
        "min_distance_at_end": min_pair,
        "frames_collected": len(frames),
    }
    if not explore and nve is not None and stop == "completed":
        record["nve_drift_mev_per_atom_per_ps"] = nve_drift(series, settings["steps"] * settings["timestep_fs"] / 1000)
    return record, {key: np.array(values) for key, values in series.items()}, frames


def nve_drift(series: dict[str, list[float]], start_ps: float) -> float:
    """Slope of the total energy per atom over the NVE part (meV/atom/ps), by a least-squares line."""
    time_ps, etot = np.array(series["time_ps"]), np.array(series["etot"])
    mask = time_ps > start_ps
    if mask.sum() < 2:
        return float("nan")
    return float(np.polyfit(time_ps[mask], etot[mask], 1)[0] * 1000)


def maxvol_select(frames: list, yaml_path: str, asi_path: str, count: int) -> list[int]:
    """Indices of at most ``count`` frames chosen by D-optimality (MaxVol) against the potential's active set."""
    if len(frames) <= count:
        return list(range(len(frames)))
    import pandas as pd
    from pyace import BBasisConfiguration
    from pyace.aceselect import select_structures_maxvol
    from pyace.activelearning import compute_A_active_inverse, load_active_inverse_set

    dataframe = pd.DataFrame({"ase_atoms": frames})
    basis = BBasisConfiguration(yaml_path)
    extra = compute_A_active_inverse(load_active_inverse_set(asi_path))
    selected = select_structures_maxvol(dataframe, basis, extra_A0_projections_dict=extra, max_structures=count)
    return sorted(int(index) for index in selected.index)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", required=True, help="the B-basis .yaml")
    parser.add_argument("--active-set", default=None, help="the .asi (gamma; needed to explore)")
    parser.add_argument("--structures", required=True, help="start structures, extxyz")
    parser.add_argument("--parameters", required=True, help="JSON settings (every key of REQUIRED)")
    args = parser.parse_args()
    from ase.io import read, write

    with open(args.parameters) as handle:
        settings = json.load(handle)
    if missing := [key for key in REQUIRED if key not in settings]:
        fail("input_unreadable", f"{args.parameters} misses {missing}")
    try:
        starts = read(args.structures, index=":")
    except Exception as exception:  # any reader error is the input's fault
        fail("input_unreadable", f"{args.structures}: {exception}")
    try:
        calculator = load_calculator(args.potential, args.active_set)
    except Exception as exception:
        fail("potential_unreadable", f"{args.potential}: {exception}")

    begin = time.perf_counter()
    records, series, frames = [], {}, []
    label = 0
    for start_index, start in enumerate(starts):
        for temperature in settings["temperatures"]:
            atoms = repeat_to(start, int(settings["min_atoms"]))
            record, arrays, collected = run_trajectory(
                atoms, calculator, float(temperature), settings, int(settings["seed"]) + label, label
            )
            record["start"] = start_index
            records.append(record)
            series.update({f"t{label:03d}_{key}": value for key, value in arrays.items()})
            frames.extend(collected)
            print(json.dumps(record), flush=True)
            label += 1
    selected: list[int] = []
    if settings["mode"] == "explore" and frames:
        selected = maxvol_select(frames, args.potential, args.active_set, int(settings["max_selected"]))
        write("selected.xyz", [frames[index] for index in selected], format="extxyz")
    np.savez("trajectory.npz", **series)
    summary = {
        "mode": settings["mode"],
        "trajectories": records,
        "frames_collected": len(frames),
        "frames_selected": len(selected),
        "seconds": time.perf_counter() - begin,
    }
    with open("summary.json", "w") as handle:
        json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()
