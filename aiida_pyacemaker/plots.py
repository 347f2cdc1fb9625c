"""Plots of a distillation campaign (matplotlib): parity against the held-out DFT set, learning curve over the
iterations, the histogram of the teacher's (calibrated) uncertainties with both thresholds, and the calibration
curve (the teacher's true largest force error on the DFT rows against its raw uncertainty, with the fitted map).

Each ``*_figure`` function returns a ``Figure`` (a notebook shows it); ``write_campaign_plots`` writes them all as
PNG files for a finished ``DistillationWorkChain``.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(size: tuple[float, float] = (4.5, 4.0)) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()


def parity_figure(reference: np.ndarray, predicted: np.ndarray, quantity: str, unit: str, scale: float) -> Figure:
    """Predicted against reference, with the diagonal and the RMSE (``scale`` converts to the shown unit)."""
    figure, axes = _figure()
    reference, predicted = np.asarray(reference) * scale, np.asarray(predicted) * scale
    axes.scatter(reference, predicted, s=8, alpha=0.6)
    low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="black", linewidth=0.8)
    rmse = float(np.sqrt(np.mean((predicted - reference) ** 2)))
    axes.set(xlabel=f"DFT {quantity} ({unit})", ylabel=f"ACE {quantity} ({unit})", title=f"RMSE {rmse:.3g} {unit}")
    return figure


def learning_curve_figure(summary: dict[str, Any]) -> Figure:
    """Test and train force RMSE per iteration, with the cumulative DFT calls on a second axis."""
    figure, axes = _figure((5.5, 4.0))
    records = summary["per_iteration"]
    iterations = [record["iteration"] for record in records]
    for key, label in (("test_force_rmse_mev_per_a", "test"), ("train_force_rmse_mev_per_a", "train")):
        values = [record.get(key) for record in records]
        if any(value is not None for value in values):
            axes.plot(iterations, [np.nan if v is None else v for v in values], marker="o", label=f"{label} forces")
    axes.set(xlabel="iteration", ylabel="force RMSE (meV/A)", xticks=iterations)
    axes.legend(loc="upper left")
    calls = axes.twinx()
    calls.step(iterations, [record["dft_calls_total"] for record in records], where="mid", color="grey")
    calls.set_ylabel(f"DFT calls (budget {summary['dft_budget']})")
    calls.set_ylim(0, max(summary["dft_budget"], summary["dft_calls"]) + 1)
    calls.yaxis.get_major_locator().set_params(integer=True)
    return figure


def calibration_figure(calibration: dict[str, Any]) -> Figure:
    """The calibration's points (raw uncertainty, true largest force error on DFT rows) and its fitted map."""
    figure, axes = _figure((5.0, 4.0))
    raw, error = np.asarray(calibration["raw"], dtype=float), np.asarray(calibration["error"], dtype=float)
    floor = 1e-6
    axes.scatter(np.maximum(raw, floor), np.maximum(error, floor), s=14, label=f"DFT rows ({len(raw)})")
    grid = np.geomspace(max(float(raw.min()), floor) / 1.5, max(float(raw.max()), floor) * 1.5, 100)
    fitted = calibration["prefactor"] * grid ** calibration["exponent"]
    label = f"{calibration['prefactor']:.3g} u^{calibration['exponent']:.2f}"
    axes.plot(grid, fitted, color="black", linewidth=1.0, label=label)
    axes.set(
        xscale="log",
        yscale="log",
        xlabel=f"raw uncertainty ({calibration['uncertainty_kind']})",
        ylabel="true largest atomic force error (eV/A)",
        title=f"Spearman {calibration['spearman']:.2f}" if calibration.get("spearman") is not None else None,
    )
    axes.legend()
    return figure


def uncertainty_figure(uncertainty: np.ndarray, accept: float, call_dft: float) -> Figure:
    """Histogram of the finite (calibrated) uncertainties, with the acceptance and DFT thresholds."""
    figure, axes = _figure((5.5, 4.0))
    values = np.asarray(uncertainty, dtype=float)
    axes.hist(values[np.isfinite(values)], bins=40, color="tab:blue", alpha=0.8)
    axes.axvline(accept, color="tab:green", linestyle="--", label=f"accept <= {accept:g}")
    axes.axvline(call_dft, color="tab:red", linestyle="--", label=f"DFT > {call_dft:g}")
    axes.set(xlabel="teacher uncertainty (eV/A)", ylabel="structures")
    axes.legend()
    return figure


ENGINE_STYLE = {
    "ace": ("ACE", "tab:blue", "-"),
    "teacher": ("teacher", "tab:orange", "--"),
    "dft": ("DFT", "black", ":"),
}


def eos_figure(table: dict[str, Any], curves) -> Figure:
    """Energy per atom against volume per atom for every engine: its points and its Birch-Murnaghan fit, each
    relative to its own minimum (engines have different energy zeros)."""
    figure, axes = _figure()
    for engine in table["engines"]:
        label, color, style = ENGINE_STYLE[engine]
        volumes = curves.get_array(f"{engine}_eos_volumes_per_atom")
        energies = curves.get_array(f"{engine}_eos_energies_per_atom")
        values = table["properties"][engine]
        v0, e0, b0 = values["volume_per_atom"], values["energy_per_atom"], values["bulk_modulus_gpa"] / 160.21766208
        bp = values["bulk_modulus_derivative"]
        grid = np.linspace(volumes.min(), volumes.max(), 100)
        eta = (v0 / grid) ** (2 / 3)
        fit = e0 + 9 * v0 * b0 / 16 * ((eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta))
        axes.plot(
            grid,
            (fit - e0) * 1e3,
            color=color,
            linestyle=style,
            label=f"{label}: a0 {values['lattice_constant']:.3f} A",
        )
        axes.scatter(volumes, (energies - e0) * 1e3, color=color, s=12)
    axes.set(xlabel="volume (A^3/atom)", ylabel="E - E0 (meV/atom)", title=f"EOS of {table['prototype']}")
    axes.legend(fontsize=8)
    return figure


def phonon_figure(table: dict[str, Any], curves) -> Figure:
    """Phonon bands on the standard path for every engine, with imaginary modes flagged in the legend."""
    figure, axes = _figure((6.0, 4.0))
    engines = [engine for engine in table["engines"] if f"{engine}_band_x" in curves.get_arraynames()]
    special = curves.get_array(f"{engines[0]}_band_special_x")
    for engine in engines:
        label, color, style = ENGINE_STYLE[engine]
        x = curves.get_array(f"{engine}_band_x")
        bands = curves.get_array(f"{engine}_band_frequencies_thz")
        imaginary = " (imaginary modes)" if table["properties"][engine]["imaginary_modes"] else ""
        for index in range(bands.shape[1]):
            axes.plot(
                x,
                bands[:, index],
                color=color,
                linestyle=style,
                linewidth=1,
                label=label + imaginary if index == 0 else None,
            )
    for position in special:
        axes.axvline(position, color="grey", linewidth=0.5)
    labels = [r"$\Gamma$" if name == "G" else name for name in curves.base.attributes.get("band_labels", [])]
    axes.set_xticks(special, labels[: len(special)])
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set(ylabel="frequency (THz)", title=f"phonons of {table['prototype']}", xlim=(special[0], special[-1]))
    axes.legend(fontsize=8)
    return figure


def validation_figures(table_node, curves) -> dict[str, Figure]:
    """The figures of a validation: EOS curves and phonon bands of ACE, the teacher and DFT."""
    table = table_node.get_dict()
    return {"validation_eos": eos_figure(table, curves), "validation_phonons": phonon_figure(table, curves)}


def write_figures(figures: dict[str, Figure], folder: str | pathlib.Path) -> list[pathlib.Path]:
    """Write ``figures`` as ``<name>.png`` in ``folder``; return the paths."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


def campaign_figures(node) -> dict[str, Figure]:
    """The figures of a finished ``DistillationWorkChain`` node (parity plots only when it had a test set)."""
    from .evaluation import parity_data, predictions
    from .workflows.tiered_oracle import TieredOracleWorkChain

    figures: dict[str, Figure] = {"learning_curve": learning_curve_figure(node.outputs.summary.get_dict())}
    oracles = [child for child in node.called if child.process_class is TieredOracleWorkChain]
    uncertainty = np.concatenate([oracle.outputs.routing.get_array("uncertainty") for oracle in oracles])
    figures["uncertainty_histogram"] = uncertainty_figure(
        uncertainty, node.inputs.oracle.uncertainty_threshold.value, node.inputs.oracle.threshold_call_dft.value
    )
    if "calibration" in node.outputs:
        figures["calibration"] = calibration_figure(node.outputs.calibration.get_dict())
    if "test_set" in node.inputs:
        data = parity_data(predictions(node.outputs.potential, node.inputs.test_set))
        mean = float(np.mean(data["energy_ref"]))  # energies relative to the set's mean: readable axes
        figures["energy_parity"] = parity_figure(
            data["energy_ref"] - mean, data["energy_ace"] - mean, "energy - mean", "meV/atom", 1e3
        )
        figures["force_parity"] = parity_figure(data["forces_ref"], data["forces_ace"], "force", "eV/A", 1.0)
    if "validation" in node.outputs:
        figures.update(validation_figures(node.outputs.validation, node.outputs.validation_curves))
    return figures


def write_campaign_plots(node, folder: str | pathlib.Path) -> list[pathlib.Path]:
    """Write the campaign's figures as ``<name>.png`` in ``folder``; return the paths."""
    return write_figures(campaign_figures(node), folder)
