"""Campaign files: the distillation loop described in YAML, validated before anything is stored or submitted.

Example (paths are relative to the file)::

    campaign: si-demo
    protocol: fast                      # fast | balanced | stringent (protocols/distillation.yaml)
    prototypes:
      - bulk: {name: Si, crystalstructure: diamond, a: 5.43, cubic: true}
      - file: my_cells.xyz              # any file ASE reads; every frame is a prototype
    teacher: ../models/si-foundation/mace_si_foundation.model  # or a list (a committee)
    test_set: held_out_dft.xyz          # optional; REF_energy / REF_forces (or calculator results), DFT labels
    codes: {mace: mace@localhost, pw: pw@localhost, pacemaker: pacemaker@localhost, mace_train: mace-train@localhost}
    overrides:                          # the ports of DistillationWorkChain, nested as they are
      dft_budget: 5
      oracle: {uncertainty_threshold: 0.08}
      training: {pacemaker: {pacemaker: {parameters: {maxiter: 300}}}}

``teacher`` is one MACE model (a foundation model: its uncertainty is the latent distance to the prototypes and,
once fine-tuned on them, the campaign's DFT structures) or a list of two or more (a committee: their spread);
``committee`` is the older name of the same key. ``codes.mace_train: null`` turns Phase 4 (fine-tuning) off,
``explore: false`` Phase 3 (exploration by MD; ``codes.ace_md: null`` too, and the MD stability check with it) and
``codes.evaluate: null`` Phase 2 (validation).
``overrides`` follow the work chain's ports (one schema: ``verdi plugin list aiida.workflows
pyacemaker.distillation`` shows them); the children's protocols of the same name fill what is not given. Every
error names the key and what it allows.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from .protocols import ProtocolError, builder_inputs, check_override_keys

REQUIRED = ("campaign", "prototypes")
#: Exactly one of these names the teacher (``committee`` is the older name).
TEACHER_KEYS = ("teacher", "committee")
OPTIONAL = ("protocol", "test_set", "codes", "overrides", "pseudo_family", "explore", *TEACHER_KEYS)
DEFAULT_CODES = {
    "mace": "mace@localhost",
    "pw": "pw@localhost",
    "pacemaker": "pacemaker@localhost",
    "mace_train": "mace-train@localhost",
    "ace_md": "ace-md@localhost",
    "evaluate": "evaluate@localhost",
}
#: Codes whose phase a campaign may turn off with ``null``: Phase 4, Phase 3, Phase 2.
OPTIONAL_CODES = ("mace_train", "ace_md", "evaluate")
BULK_KEYS = ("name", "crystalstructure", "a", "c", "cubic", "orthorhombic")


class ConfigError(ValueError):
    """A campaign file that cannot be used; the message names the key."""


def _protocols() -> dict[str, Any]:
    from .workflows.distillation import DistillationWorkChain

    return DistillationWorkChain.get_available_protocols()


def load_config(path: str | pathlib.Path) -> dict[str, Any]:
    """Read ``path`` with ``yaml.safe_load`` and check it; paths in it become absolute."""
    path = pathlib.Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exception:
        raise ConfigError(f"{path}: cannot read it as YAML: {exception}") from exception
    return check_config(content, path.resolve().parent)


def check_config(content: Any, base: pathlib.Path) -> dict[str, Any]:
    """The validated configuration (see the module docstring); ``base`` resolves relative paths."""
    if not isinstance(content, dict):
        raise ConfigError(f"the file must hold a mapping with the keys {sorted(REQUIRED + OPTIONAL)}")
    if unknown := sorted(set(content) - set(REQUIRED + OPTIONAL)):
        raise ConfigError(f"unknown key(s) {unknown}; allowed: {sorted(REQUIRED + OPTIONAL)}")
    if missing := [key for key in REQUIRED if key not in content]:
        raise ConfigError(f"missing key(s) {missing}")
    if len(given := [key for key in TEACHER_KEYS if key in content]) != 1:
        raise ConfigError(f"give the teacher as exactly one of {list(TEACHER_KEYS)}, got {given or 'none'}")
    config = dict(content)
    if not isinstance(config["campaign"], str) or not config["campaign"].strip():
        raise ConfigError("campaign: give a non-empty name (a string)")
    protocols = _protocols()
    config.setdefault("protocol", "fast")
    if config["protocol"] not in protocols:
        raise ConfigError(f"protocol: `{config['protocol']}` is not one of {sorted(protocols)}")
    config["prototypes"] = _check_prototypes(config["prototypes"], base)
    config["teacher"] = _check_teacher(config.pop(given[0]), base, given[0])
    if config.get("test_set") is not None:
        config["test_set"] = _existing_file(config["test_set"], base, "test_set")
    config["codes"] = _check_codes(config.get("codes") or {})
    config.setdefault("explore", True)
    if not isinstance(config["explore"], bool):
        raise ConfigError(f"explore: give true or false, got {config['explore']!r}")
    config["overrides"] = _check_overrides(config.get("overrides") or {})
    return config


def _existing_file(value: Any, base: pathlib.Path, key: str) -> pathlib.Path:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: give a file path (a string), got {value!r}")
    path = (base / value).resolve()
    if not path.is_file():
        raise ConfigError(f"{key}: no such file {path}")
    return path


def _check_prototypes(value: Any, base: pathlib.Path) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ConfigError("prototypes: give a list of entries, each `bulk: {...}` or `file: path`")
    checked: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        key = f"prototypes[{index}]"
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ("bulk", "file"):
            raise ConfigError(f"{key}: give exactly one of `bulk: {{...}}` or `file: path`")
        if "file" in entry:
            checked.append({"file": _existing_file(entry["file"], base, f"{key}.file")})
            continue
        bulk = entry["bulk"]
        if not isinstance(bulk, dict) or "name" not in bulk:
            raise ConfigError(f"{key}.bulk: give a mapping with at least `name`; allowed keys: {list(BULK_KEYS)}")
        if unknown := sorted(set(bulk) - set(BULK_KEYS)):
            raise ConfigError(f"{key}.bulk: unknown key(s) {unknown}; allowed: {list(BULK_KEYS)}")
        checked.append({"bulk": bulk})
    return checked


def _check_teacher(value: Any, base: pathlib.Path, key: str) -> list[pathlib.Path | int]:
    """One model (a path or a node pk) or a list of them; every file must exist."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{key}: give one MACE model or a list of them (file paths or node pks)")
    return [
        item if isinstance(item, int) and not isinstance(item, bool) else _existing_file(item, base, f"{key}[{i}]")
        for i, item in enumerate(items)
    ]


def _check_codes(value: Any) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise ConfigError(f"codes: give a mapping with the keys {sorted(DEFAULT_CODES)}")
    if unknown := sorted(set(value) - set(DEFAULT_CODES)):
        raise ConfigError(f"codes: unknown key(s) {unknown}; allowed: {sorted(DEFAULT_CODES)}")
    codes: dict[str, str | None] = {**DEFAULT_CODES, **value}
    for key, label in codes.items():
        if label is None and key in OPTIONAL_CODES:
            continue
        if not isinstance(label, str):
            raise ConfigError(f"codes.{key}: give a code label such as `{DEFAULT_CODES[key]}`")
    return codes


def _check_overrides(value: Any) -> dict[str, Any]:
    """The overrides' keys checked against ``DistillationWorkChain``'s ports (values: when the builder is made)."""
    from .workflows.distillation import DistillationWorkChain

    if not isinstance(value, dict):
        raise ConfigError("overrides: give a mapping that follows DistillationWorkChain's inputs")
    try:
        check_override_keys(DistillationWorkChain.spec().inputs, value)
    except ProtocolError as exception:
        raise ConfigError(f"overrides: {exception}") from exception
    return value


def prototype_atoms(config: dict[str, Any]) -> list:
    """The prototypes as ASE ``Atoms``."""
    from ase.build import bulk
    from ase.io import read

    structures: list = []
    for entry in config["prototypes"]:
        if "file" in entry:
            structures += list(read(entry["file"], index=":"))
        else:
            structures.append(bulk(**entry["bulk"]))
    return structures


def build_from_config(config: dict[str, Any]):
    """The ``DistillationWorkChain`` builder; errors of the work chain's own validators name the key."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent
    from ase.io import read

    from .data import LabelledStructuresData, MaceModelData, StructureSetData
    from .workflows.distillation import DistillationWorkChain

    codes = {}
    for key, label in config["codes"].items():
        if label is None:
            continue
        try:
            codes[key] = orm.load_code(label)
        except Exception as exception:
            raise ConfigError(f"codes.{key}: `{label}` is not a code of this profile ({exception})") from exception
    models: dict[str, Any] = {}
    for index, item in enumerate(config["teacher"]):
        try:
            models[f"m{index}"] = orm.load_node(item) if isinstance(item, int) else MaceModelData.from_file(item)
        except (ValueError, OSError, NotExistent) as exception:
            raise ConfigError(f"teacher[{index}]: {exception}") from exception
        if not isinstance(models[f"m{index}"], MaceModelData):
            raise ConfigError(f"teacher[{index}]: node {item} is a {type(models[f'm{index}']).__name__}, no MACE model")
    test_set = None
    if config.get("test_set"):
        test_set = LabelledStructuresData.from_atoms(list(read(config["test_set"], index=":")), source="dft")
    overrides = dict(config["overrides"])
    if config.get("pseudo_family"):
        oracle = overrides.setdefault("oracle", {})
        oracle.setdefault("meta_parameters", {})["pseudo_family"] = config["pseudo_family"]
    try:
        builder = DistillationWorkChain.get_builder_from_protocol(
            StructureSetData.from_atoms(prototype_atoms(config)),
            models,
            codes["mace"],
            codes["pw"],
            codes["pacemaker"],
            campaign=config["campaign"],
            mace_train_code=codes.get("mace_train"),
            md_code=codes.get("ace_md"),
            explore=config["explore"],
            evaluate_code=codes.get("evaluate"),
            test_set=test_set,
            protocol=config["protocol"],
            overrides=overrides,
        )
    except ValueError as exception:
        raise ConfigError(f"overrides: {exception}") from exception
    # What the process does when it starts: fill the defaults, then run every validator.
    ports = DistillationWorkChain.spec().inputs
    error = ports.validate(ports.pre_process(builder_inputs(builder)))
    if error is not None:
        raise ConfigError(f"overrides: {error.message}")
    return builder
