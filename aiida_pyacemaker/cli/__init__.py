"""The ``aiida-pyacemaker`` command line."""

from __future__ import annotations

import click

from .distil import distil
from .doctor import doctor
from .setup import setup
from .validate import validate


@click.group()
@click.version_option(package_name="aiida-pyacemaker")
def cli() -> None:
    """aiida-pyacemaker: distil MACE and a few DFT calculations into a fast ACE potential."""


cli.add_command(setup)
cli.add_command(distil)
cli.add_command(doctor)
cli.add_command(validate)
