"""Protocols the AiiDA way: a YAML file per process (``default_inputs`` that mirror its ports, ``protocols`` that
override them, ``default_protocol``), read through aiida-quantumespresso's ``ProtocolMixin``.

Every process of the plugin offers ``fast``, ``balanced`` and ``stringent``. A parent passes ``protocol`` and the
nested ``overrides`` of a child's namespace down to the child's ``get_builder_from_protocol``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from importlib import resources
from typing import Any, ClassVar

from aiida import orm
from aiida_quantumespresso.workflows.protocols.utils import ProtocolMixin as _QeProtocolMixin
from aiida_quantumespresso.workflows.protocols.utils import recursive_merge
from plumpy.ports import PortNamespace

__all__ = (
    "QE_PROTOCOLS",
    "ProtocolError",
    "ProtocolMixin",
    "as_input_nodes",
    "builder_inputs",
    "check_override_keys",
    "nested_builder",
    "recursive_merge",
    "without",
)

#: The plugin's protocols and aiida-quantumespresso's protocol of the same intent, used by the DFT tier (5.1 names
#: them fast, balanced, stringent; moderate and precise are its aliases of the last two).
QE_PROTOCOLS = {"fast": "fast", "balanced": "balanced", "stringent": "stringent"}

#: Plain values become these nodes when a port accepts them (checked in this order).
_NODE_TYPES: tuple[tuple[type, type], ...] = (
    (bool, orm.Bool),
    (int, orm.Int),
    (float, orm.Float),
    (str, orm.Str),
    (dict, orm.Dict),
    (list, orm.List),
)


class ProtocolError(ValueError):
    """Protocol inputs or overrides that do not fit the process's ports; the message names the key."""


class ProtocolMixin(_QeProtocolMixin):
    """``get_protocol_inputs`` and friends, reading ``protocols/<_protocol_file>.yaml`` of this package."""

    _protocol_file: ClassVar[str]

    @classmethod
    def get_protocol_filepath(cls) -> pathlib.Path:
        return pathlib.Path(str(resources.files(__name__).joinpath(f"{cls._protocol_file}.yaml")))

    @staticmethod
    def _check_if_alias(alias: str) -> None:
        """No aliases: aiida-quantumespresso's ``moderate``/``precise`` are its own names, not the plugin's."""
        return None

    @classmethod
    def get_protocol_inputs(cls, protocol: Any = None, overrides: Any = None) -> dict:
        """The protocol's inputs merged with ``overrides``; an unknown protocol raises ``ProtocolError``."""
        try:
            return super().get_protocol_inputs(protocol, overrides)
        except ValueError as exception:
            available = sorted(cls.get_available_protocols())
            raise ProtocolError(f"protocol `{protocol}` is not one of {available}") from exception


#: Protocol keys that are no ports (aiida-quantumespresso's ``pseudo_family``, any ``meta_parameters``).
META_KEYS = ("meta_parameters", "pseudo_family", "fine_tune_parameters")


def _open_ended(namespace: PortNamespace) -> bool:
    """Whether a namespace takes arbitrary keys: dynamic with no declared ports (``models``, ``pseudos``).

    Namespaces made by ``expose_inputs`` are dynamic too, for internal reasons, yet declare a fixed set of ports:
    a key outside that set is a typo (aiida-quantumespresso uses the same rule for its overrides).
    """
    return namespace.dynamic and len(namespace) == 0


def _port(namespace: PortNamespace, key: str, value: Any, name: str) -> Any:
    """The port ``key`` of ``namespace`` (None in an open-ended namespace); ``ProtocolError`` naming ``name`` for a
    key that is no port, or a non-mapping value for a namespace."""
    if key not in namespace:
        if _open_ended(namespace):
            return None
        raise ProtocolError(f"`{name}` is not an input; allowed here: {sorted(set(namespace) - {'metadata'})}")
    port = namespace[key]
    if isinstance(port, PortNamespace) and not isinstance(value, Mapping):
        raise ProtocolError(f"`{name}` is a namespace: give a mapping, not {value!r}")
    return port


def check_override_keys(namespace: PortNamespace, overrides: Mapping[str, Any], path: str = "") -> None:
    """Raise ``ProtocolError`` naming the first key of ``overrides`` that is no port of ``namespace`` (nested).

    Values are not checked here (``as_input_nodes`` does, when the builder is made); protocol meta keys pass.
    """
    for key, value in overrides.items():
        name = f"{path}.{key}" if path else key
        if key in META_KEYS:
            continue
        port = _port(namespace, key, value, name)
        if port is None:
            continue
        if isinstance(port, PortNamespace) and key != "metadata":
            check_override_keys(port, value, name)


def nested_builder(namespace: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)`` (a child's ``get_builder_from_protocol``); its errors name ``namespace``."""
    try:
        return factory(*args, **kwargs)
    except ProtocolError as exception:
        raise ProtocolError(f"{namespace}: {exception}") from exception


def without(inputs: dict[str, Any], *names: str) -> dict[str, Any]:
    """``inputs`` without the top-level ``names`` (ports a parent sets itself)."""
    return {key: value for key, value in inputs.items() if key not in names}


def _accepts(port: Any, node_class: type) -> bool:
    valid = port.valid_type
    if valid is None:
        return True
    valid = valid if isinstance(valid, tuple) else (valid,)
    return any(issubclass(node_class, kind) for kind in valid)


def as_input_nodes(namespace: PortNamespace, values: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """``values`` (plain YAML values, nodes or nested mappings) as process inputs of ``namespace``.

    A plain value becomes the node its port accepts (``orm.Int`` for an integer, ``orm.Dict`` for a mapping, ...);
    nodes and non-storable inputs (``metadata``) pass through. A key that is no port of a non-dynamic namespace
    raises ``ProtocolError`` naming the key and the ports allowed there.
    """
    converted: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{path}.{key}" if path else key
        port = _port(namespace, key, value, name)
        if port is None:
            converted[key] = value
            continue
        if isinstance(port, PortNamespace):
            non_db = getattr(port, "non_db", False) or key == "metadata"
            converted[key] = dict(value) if non_db else as_input_nodes(port, value, name)
            continue
        if isinstance(value, orm.Data) or getattr(port, "non_db", False) or value is None:
            converted[key] = value
            continue
        for plain, node_class in _NODE_TYPES:
            if isinstance(value, plain) and _accepts(port, node_class):
                converted[key] = node_class(value)
                break
        else:
            if isinstance(value, int) and not isinstance(value, bool) and _accepts(port, orm.Float):
                converted[key] = orm.Float(value)
            else:
                raise ProtocolError(f"`{name}` = {value!r} does not fit the port (it takes {port.valid_type})")
    return converted


def builder_inputs(builder: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs set on a process builder, as nested plain mappings (empty namespaces left out)."""
    inputs: dict[str, Any] = {}
    for key, value in builder.items():
        if isinstance(value, Mapping) and not isinstance(value, orm.Data):
            nested = builder_inputs(value)
            if nested:
                inputs[key] = nested
        elif value is not None:
            inputs[key] = value
    return inputs
