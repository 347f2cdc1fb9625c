"""``aiida-pyacemaker distil CAMPAIGN.yaml``: validate a campaign file and submit the distillation loop."""

from __future__ import annotations

import pathlib

import click


def describe(node) -> list[str]:
    """What a finished ``DistillationWorkChain`` did, as lines to print."""
    summary = node.outputs.summary.get_dict()
    lines = [f"DistillationWorkChain<{node.pk}> finished: {summary['stop_reason']}"]
    for record in summary["per_iteration"]:
        rmse = record.get("test_force_rmse_mev_per_a")
        lines.append(
            f"  iteration {record['iteration']}: labels by route {record['routes']}; "
            f"DFT calls so far {record['dft_calls_total']}; "
            + (f"test force RMSE {rmse:.1f} meV/A" if rmse is not None else "no test set")
        )
    potential = node.outputs.potential
    fit = potential.base.attributes.get("metrics", {})
    lines.append(f"DFT calls: {summary['dft_calls']} of a budget of {summary['dft_budget']}")
    if "test_force_rmse_mev_per_a" in summary["per_iteration"][-1]:
        last = summary["per_iteration"][-1]
        lines.append(
            f"final test RMSE: forces {last['test_force_rmse_mev_per_a']:.1f} meV/A, "
            f"energy {last['test_energy_rmse_mev_per_atom']:.1f} meV/atom"
        )
        if "test_worst_structure" in last:
            lines.append(
                f"  per structure: median force RMSE {last['test_median_structure_force_rmse_mev_per_a']:.1f} meV/A, "
                f"worst {last['test_worst_structure_force_rmse_mev_per_a']:.1f} meV/A (test row "
                f"{last['test_worst_structure']})"
            )
        if "test_max_gamma" in last:
            flagged = last["test_extrapolating_structures"]
            lines.append(
                f"  extrapolation grade on the test set: largest gamma {last['test_max_gamma']:.2f}; "
                f"{len(flagged)} extrapolating test rows {flagged}"
            )
    if "calibration" in node.outputs:
        calibration = node.outputs.calibration.get_dict()
        rho = calibration.get("spearman")
        lines.append(
            f"teacher uncertainty ({calibration['uncertainty_kind']}) calibrated on {calibration['points']} DFT rows: "
            f"error = {calibration['prefactor']:.3g} * u^{calibration['exponent']:.2f} eV/A"
            + (f", Spearman {rho:.2f}" if rho is not None else "")
        )
    lines.append(f"final potential: AcePotentialData<{potential.pk}> ({fit.get('iterations', '?')} fit iterations)")
    for record in summary["per_iteration"]:
        if "exploration" in record:
            explored = record["exploration"]
            lines.append(
                f"  exploration before iteration {record['iteration']}: {explored['md_ps']:.1f} ps MD, largest gamma "
                f"{explored['max_gamma']:.2f}, {explored['frames_selected']} of {explored['frames_collected']} "
                f"extrapolating frames selected (stops: {', '.join(explored['stop_reasons'])})"
            )
    if "validation" in node.outputs:
        from ..properties import format_md, format_table

        table = node.outputs.validation.get_dict()
        lines.append(f"validation of the final potential on {table['prototype']} (Phase 2):")
        lines.extend(format_table(table["rows"], table["engines"]).splitlines())
        if "md" in table:
            lines.append(format_md(table["md"]))
    return lines


def launch(config_file: str | pathlib.Path, profile: str | None, wait: bool, plots: str | None, timeout: float):
    """Load the profile, build the loop from ``config_file``, submit it; with ``wait``, report and plot."""
    from aiida import load_profile

    from ..config import ConfigError, build_from_config, load_config
    from .launch import DaemonNotRunningError, submit_and_wait

    try:
        config = load_config(config_file)
    except ConfigError as exception:
        raise click.ClickException(f"{config_file}: {exception}") from exception
    load_profile(profile, allow_switch=True)
    try:
        builder = build_from_config(config)
    except ConfigError as exception:
        raise click.ClickException(f"{config_file}: {exception}") from exception
    if not wait:
        from aiida.engine import submit
        from aiida.engine.daemon.client import get_daemon_client

        node = submit(builder)
        click.echo(f"Submitted DistillationWorkChain<{node.pk}>: follow it with `verdi process report {node.pk}`")
        if not get_daemon_client().is_daemon_running:
            click.echo("The daemon is not running: it starts with `verdi daemon start`.", err=True)
        return node
    try:
        node = submit_and_wait(builder, timeout=timeout, echo=click.echo)
    except (DaemonNotRunningError, TimeoutError) as exception:
        raise click.ClickException(str(exception)) from exception
    if not node.is_finished_ok:
        if "summary" in node.outputs:  # e.g. an unusable potential: the campaign's record is still worth reading
            for line in describe(node):
                click.echo(line)
        raise click.ClickException(
            f"DistillationWorkChain<{node.pk}> failed: [{node.exit_status}] {node.exit_message} "
            f"(verdi process report {node.pk})"
        )
    for line in describe(node):
        click.echo(line)
    folder = pathlib.Path(plots or "distillation-plots").resolve()
    files = node.outputs.potential.write_files(folder / "potential")
    click.echo("potential files: " + ", ".join(str(path) for path in files.values()))
    from ..plots import write_campaign_plots

    for path in write_campaign_plots(node, folder):
        click.echo(f"plot: {path}")
    click.echo(f"provenance: verdi process report {node.pk}; verdi data pyacemaker show {node.outputs.potential.pk}")
    return node


@click.command()
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--profile", default=None, help="AiiDA profile (default: the default profile).")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Block until it finishes, then report.")
@click.option("--plots", default=None, help="Folder for the PNG plots and potential files (with --wait).")
@click.option("--timeout", default=3600.0, show_default=True, type=float, help="Seconds to wait (with --wait).")
def distil(config_file: str, profile: str | None, wait: bool, plots: str | None, timeout: float) -> None:
    """Run the distillation loop described in CONFIG_FILE (YAML) on the daemon.

    The file is read with yaml.safe_load and checked before anything is stored: every error names the key and
    the values it allows. See aiida_pyacemaker/config.py for the format.
    """
    launch(config_file, profile, wait, plots, timeout)
