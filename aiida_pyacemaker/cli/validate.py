"""``aiida-pyacemaker validate IDENTIFIER``: print the Phase 2 table of a potential (and write its figures)."""

from __future__ import annotations

import click


def find_table(node):
    """(table, curves) for an ``AcePotentialData`` (its newest finished validation), a ``ValidationWorkChain`` or a
    ``DistillationWorkChain`` node; ``click.ClickException`` when there is none."""
    from aiida import orm

    from ..data.ace_potential import AcePotentialData
    from ..workflows.validation import ValidationWorkChain

    if isinstance(node, AcePotentialData):
        query = orm.QueryBuilder()
        query.append(AcePotentialData, filters={"id": node.pk}, tag="potential")
        query.append(
            orm.WorkChainNode,
            with_incoming="potential",
            filters={"attributes.process_label": ValidationWorkChain.__name__, "attributes.exit_status": 0},
            project="*",
        )
        query.order_by({orm.WorkChainNode: {"ctime": "desc"}})
        runs = query.all(flat=True)
        if not runs:
            raise click.ClickException(
                f"AcePotentialData<{node.pk}> has no finished ValidationWorkChain: run one (see docs, Phase 2) or "
                "give the DistillationWorkChain with a `validation` namespace"
            )
        node = runs[0]
    outputs = node.outputs
    if "table" in outputs:
        return outputs.table, outputs.curves
    if "validation" in outputs:
        return outputs.validation, outputs.validation_curves
    raise click.ClickException(f"{node.__class__.__name__}<{node.pk}> has no validation table")


@click.command("validate")
@click.argument("identifier")
@click.option("--profile", default=None, help="AiiDA profile (default: the default profile).")
@click.option("--plots", default=None, type=click.Path(file_okay=False), help="Write the EOS and phonon figures here.")
def validate(identifier: str, profile: str | None, plots: str | None) -> None:
    """Print the validation table (ACE, teacher, DFT, relative errors, MD stability) of IDENTIFIER: a potential's
    pk or uuid, a ValidationWorkChain or a DistillationWorkChain."""
    from aiida import load_profile, orm

    from ..properties import format_md, format_table

    load_profile(profile, allow_switch=True)
    try:
        node = orm.load_node(identifier)
    except Exception as exception:
        raise click.ClickException(f"no node `{identifier}`: {exception}") from exception
    table, curves = find_table(node)
    content = table.get_dict()
    click.echo(f"validation of {content['prototype']} (Dict<{table.pk}>)")
    click.echo(format_table(content["rows"], content["engines"]))
    if "md" in content:
        click.echo(format_md(content["md"]))
    if plots:
        from ..plots import validation_figures, write_figures

        for path in write_figures(validation_figures(table, curves), plots):
            click.echo(f"wrote {path}")
