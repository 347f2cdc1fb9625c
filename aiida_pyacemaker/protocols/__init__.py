"""Default inputs of the plugin's processes, kept as YAML files beside this module."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def load_protocol_file(name: str) -> dict[str, Any]:
    """The parsed ``<name>.yaml`` of this package."""
    return yaml.safe_load(resources.files(__name__).joinpath(f"{name}.yaml").read_text())


def get_protocol(name: str, protocol: str | None = None) -> dict[str, Any]:
    """The whole entry of ``protocol`` (default: the file's ``default_protocol``) in ``<name>.yaml``."""
    content = load_protocol_file(name)
    protocol = protocol or content["default_protocol"]
    if protocol not in content["protocols"]:
        raise ValueError(f"unknown protocol `{protocol}` for {name}; available: {sorted(content['protocols'])}")
    return dict(content["protocols"][protocol])


def get_protocol_parameters(name: str, protocol: str | None = None) -> dict[str, Any]:
    """The ``parameters`` of ``protocol`` (default: the file's ``default_protocol``) in ``<name>.yaml``."""
    return dict(get_protocol(name, protocol)["parameters"])
