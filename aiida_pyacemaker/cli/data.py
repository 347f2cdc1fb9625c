"""``verdi data pyacemaker``: list, show and export potentials, models, structure sets and campaign histories."""

from __future__ import annotations

import pathlib
from typing import Any

import click
from aiida.cmdline.utils.decorators import with_dbenv

#: What ``list`` can show: data entry point name (without ``pyacemaker.``) per kind.
KINDS = {
    "potentials": "ace.potential",
    "models": "mace.model",
    "labelled": "labelled_structures",
    "sets": "structure_set",
}


def _data_class(kind: str):
    from aiida.plugins import DataFactory

    return DataFactory(f"pyacemaker.{KINDS[kind]}")


def _load(identifier: str):
    from aiida import orm
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    try:
        return orm.load_node(identifier)
    except (NotExistent, MultipleObjectsError, ValueError) as exception:
        raise click.BadParameter(f"no single node `{identifier}`: {exception}", param_hint="IDENTIFIER") from exception


def describe_node(node) -> dict[str, Any]:
    """The attributes a user asks about first, by kind of node."""
    from ..data import AcePotentialData, LabelledStructuresData, MaceModelData, StructureSetData

    common = {"pk": node.pk, "uuid": node.uuid, "type": type(node).__name__, "created": node.ctime.isoformat()}
    attributes = node.base.attributes
    keys: tuple[str, ...]
    if isinstance(node, AcePotentialData):
        keys = ("elements", "cutoff", "num_functions", "backend", "has_active_set", "reference_energy", "metrics")
    elif isinstance(node, MaceModelData):
        keys = ("elements", "r_max", "dtype", "num_parameters", "heads", "sha256")
    elif isinstance(node, LabelledStructuresData):
        keys = ("num_structures", "num_atoms", "elements", "sources")
    elif isinstance(node, StructureSetData):
        keys = ("num_structures", "num_atoms", "elements")
    else:
        raise click.BadParameter(f"{common['type']}<{node.pk}> is not an aiida-pyacemaker data node")
    details = {key: attributes.get(key) for key in keys if attributes.get(key) is not None}
    if node.creator is not None:
        details["created_by"] = f"{node.creator.process_label}<{node.creator.pk}>"
    return {**common, **details}


@click.group("pyacemaker")
def pyacemaker() -> None:
    """aiida-pyacemaker data: ACE potentials, MACE models, structure sets, campaign histories."""


@pyacemaker.command("list")
@click.option("--kind", type=click.Choice(sorted(KINDS)), default="potentials", show_default=True)
@click.option("--limit", type=int, default=50, show_default=True)
@with_dbenv()
def list_nodes(kind: str, limit: int) -> None:
    """List the newest nodes of one kind."""
    from aiida import orm

    query = orm.QueryBuilder().append(_data_class(kind), project="*").order_by({_data_class(kind): {"ctime": "desc"}})
    rows = [describe_node(node) for node in query.limit(limit).all(flat=True)]
    if not rows:
        click.echo(f"no {kind} in this profile")
        return
    for row in rows:
        extra = {key: value for key, value in row.items() if key in ("elements", "num_structures", "num_functions")}
        summary = " ".join(f"{key}={value}" for key, value in extra.items())
        click.echo(f"{row['pk']:>8}  {row['created'][:19]}  {row['type']:<24} {summary}")


@pyacemaker.command("show")
@click.argument("identifier")
@with_dbenv()
def show(identifier: str) -> None:
    """Show a potential, model or structure set (pk or uuid)."""
    import yaml

    click.echo(yaml.safe_dump(describe_node(_load(identifier)), sort_keys=False).rstrip())


@pyacemaker.command("export")
@click.argument("identifier")
@click.argument("output", type=click.Path())
@with_dbenv()
def export(identifier: str, output: str) -> None:
    """Write a node's files: a potential into the folder OUTPUT (.yaml/.yace/.asi), a model to the file OUTPUT,
    a (labelled) structure set to the extended XYZ file OUTPUT."""
    from ase.io import write

    from ..data import AcePotentialData, LabelledStructuresData, MaceModelData, StructureSetData

    node = _load(identifier)
    target = pathlib.Path(output)
    if isinstance(node, AcePotentialData):
        for kind, path in node.write_files(target).items():
            click.echo(f"{kind}: {path}")
        return
    if isinstance(node, MaceModelData):
        target.write_bytes(node.get_content(mode="rb"))
    elif isinstance(node, LabelledStructuresData):
        node.write_extxyz(target)
    elif isinstance(node, StructureSetData):
        write(target, node.to_atoms(), format="extxyz")
    else:
        raise click.BadParameter(f"{type(node).__name__}<{node.pk}> is not an aiida-pyacemaker data node")
    click.echo(f"wrote {target}")


@pyacemaker.command("export-history")
@click.argument("campaign")
@click.argument("output", type=click.Path(dir_okay=False))
@with_dbenv()
def export_history(campaign: str, output: str) -> None:
    """Write every labelled structure of CAMPAIGN's history (all batches, in order) to the extended XYZ OUTPUT."""
    from aiida.common.exceptions import NotExistent

    from ..data import LabelledStructuresData
    from ..data.history import HistoryGroup, history_batches, history_label

    try:
        group = HistoryGroup.collection.get(label=history_label(campaign))
    except NotExistent as exception:
        raise click.BadParameter(f"no history for campaign `{campaign}`", param_hint="CAMPAIGN") from exception
    batches = history_batches(group)
    if not batches:
        raise click.ClickException(f"the history of `{campaign}` is empty")
    merged = LabelledStructuresData.gather([(batch, range(len(batch))) for batch in batches])
    merged.write_extxyz(output)
    click.echo(f"wrote {len(merged)} structures from {len(batches)} batches of `{campaign}` to {output}")
