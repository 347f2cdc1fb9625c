"""Campaign files (YAML) and the command line: errors name the key; a good file gives the protocol's builder."""

from __future__ import annotations

import pathlib
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from aiida_pyacemaker.config import ConfigError, check_config, load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "si_distillation.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_campaign_file_is_valid():
    config = load_config(EXAMPLE)
    assert config["protocol"] == "fast" and len(config["teacher"]) == 1
    assert all(path.is_file() for path in config["teacher"])
    assert config["test_set"].name == "si_test.xyz" and config["test_set"].is_file()
    assert config["codes"]["mace_train"] == "mace-train@localhost"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"campagne": "x"}, "unknown key(s) ['campagne']; allowed: ['campaign', 'codes', 'committee'"),
        ({"campaign": None}, "campaign: give a non-empty name"),
        ({"protocol": "quick"}, "protocol: `quick` is not one of ['balanced', 'fast', 'stringent']"),
        ({"prototypes": []}, "prototypes: give a list of entries"),
        ({"prototypes": [{"bulk": {"name": "Si", "lattice": 5.4}}]}, "prototypes[0].bulk: unknown key(s) ['lattice']"),
        ({"prototypes": [{"file": "nowhere.xyz"}]}, "prototypes[0].file: no such file"),
        ({"teacher": []}, "teacher: give one MACE model or a list of them"),
        ({"teacher": "../models/tiny-si/none.model"}, "teacher[0]: no such file"),
        ({"test_set": "missing.xyz"}, "test_set: no such file"),
        (
            {"codes": {"dft": "pw@localhost"}},
            "codes: unknown key(s) ['dft']; allowed: ['ace_md', 'evaluate', 'mace', 'mace_train', 'pacemaker'",
        ),
        ({"codes": {"pw": 3}}, "codes.pw: give a code label such as `pw@localhost`"),
        ({"explore": "yes"}, "explore: give true or false, got 'yes'"),
        ({"overrides": {"budget": 3}}, "overrides: `budget` is not an input; allowed here: ["),
        ({"overrides": {"oracle": {"threshold": 0.1}}}, "overrides: `oracle.threshold` is not an input; allowed here"),
        (
            {"overrides": {"training": {"pacemaker": {"pacemaker": {"params": {}}}}}},
            "overrides: `training.pacemaker.pacemaker.params` is not an input",
        ),
        ({"overrides": {"oracle": 0.1}}, "overrides: `oracle` is a namespace: give a mapping"),
        ({"overrides": [1, 2]}, "overrides: give a mapping that follows DistillationWorkChain's inputs"),
    ],
)
def test_campaign_file_errors_name_the_key(change, message):
    content = {**example(), **change}
    with pytest.raises(ConfigError) as error:
        check_config(content, EXAMPLE.parent)
    assert message in str(error.value)


def test_missing_keys_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"give the teacher as exactly one of \['teacher', 'committee'\], got none"):
        check_config({"campaign": "x", "prototypes": [{"bulk": {"name": "Si"}}]}, tmp_path)
    both = {"campaign": "x", "prototypes": [{"bulk": {"name": "Si"}}], "teacher": "a.model", "committee": ["a.model"]}
    with pytest.raises(ConfigError, match=r"exactly one of .* got \['teacher', 'committee'\]"):
        check_config(both, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read it as YAML"):
        load_config(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("campaign: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="cannot read it as YAML"):  # safe_load refuses python tags
        load_config(unsafe)


def test_build_from_the_example_gives_the_fast_protocol(
    mace_code, pw_code, pacemaker_code, mace_train_code, ace_md_code, evaluate_code, pseudo_family
):
    from aiida_pyacemaker.config import build_from_config
    from aiida_pyacemaker.protocols import builder_inputs

    overrides = {"dft_budget": 7, "oracle": {"uncertainty_threshold": 0.12}}
    builder = build_from_config({**load_config(EXAMPLE), "overrides": overrides})
    assert builder.dft_budget.value == 7
    assert builder.oracle.threshold_call_dft.value == 0.35
    assert builder.oracle.uncertainty_threshold.value == 0.12
    assert len(builder.oracle.mace.mace.models) == 1 and len(builder.test_set) == 15
    assert builder.fine_tune.mace_train.parameters["max_num_epochs"] == 10
    assert builder.prototypes.base.attributes.get("num_atoms") == 8
    # Phase 2 is on (validation of the final potential, with MD stability); Phase 3 is off in the example
    assert builder.validation.settings["dft_properties"] == ["elastic"]
    assert builder.validation.md.md.parameters["mode"] == "stability"
    assert "exploration" not in builder_inputs(builder)
    explore = load_config(EXAMPLE)
    explore["explore"] = True
    assert build_from_config(explore).exploration.md.parameters["min_atoms"] == 16  # the fast MD protocol

    # Values are checked against the same ports when the builder is made; the error names the key.
    with pytest.raises(ConfigError, match=r"overrides: `dft_budget` = '3' does not fit the port"):
        build_from_config({**load_config(EXAMPLE), "overrides": {"dft_budget": "3"}})
    with pytest.raises(ConfigError, match=r"overrides: oracle: `threshold_call_dft` = 'high' does not fit"):
        build_from_config({**load_config(EXAMPLE), "overrides": {"oracle": {"threshold_call_dft": "high"}}})

    with pytest.raises(ConfigError, match=r"overrides: .*dft_budget must be >= 0"):
        build_from_config({**load_config(EXAMPLE), "overrides": {"dft_budget": -1}})
    with pytest.raises(ConfigError, match=r"codes\.pw: `nothing@localhost` is not a code of this profile"):
        build_from_config(
            {**load_config(EXAMPLE), "codes": {**load_config(EXAMPLE)["codes"], "pw": "nothing@localhost"}}
        )


def test_distil_command_refuses_a_bad_file_before_touching_a_profile(tmp_path):
    from aiida_pyacemaker.cli import cli

    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump({**example(), "protocol": "quick"}))
    result = CliRunner().invoke(cli, ["distil", str(path), "--profile", "no-such-profile"])
    assert result.exit_code != 0
    assert "protocol: `quick` is not one of ['balanced', 'fast', 'stringent']" in result.output


def test_verdi_data_pyacemaker_is_registered():
    completed = subprocess.run(["verdi", "data", "pyacemaker", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    for command in ("list", "show", "export", "export-history"):
        assert command in completed.stdout


def test_verdi_data_commands_on_sets_and_models(tmp_path, si_dft_set, tiny_committee):
    from ase.io import read

    from aiida_pyacemaker.cli.data import pyacemaker
    from aiida_pyacemaker.data import LabelledStructuresData

    labelled = LabelledStructuresData.from_atoms(si_dft_set[:4], source="dft").store()
    model = next(iter(tiny_committee.values())).store()
    runner = CliRunner()
    listed = runner.invoke(pyacemaker, ["list", "--kind", "labelled"])
    assert listed.exit_code == 0 and str(labelled.pk) in listed.output
    shown = runner.invoke(pyacemaker, ["show", str(model.pk)])
    assert shown.exit_code == 0 and "r_max: 4.5" in shown.output and "sha256" in shown.output
    target = tmp_path / "set.xyz"
    exported = runner.invoke(pyacemaker, ["export", str(labelled.pk), str(target)])
    assert exported.exit_code == 0, exported.output
    frames = read(target, index=":")
    assert len(frames) == 4 and frames[0].info["REF_energy"] == pytest.approx(si_dft_set[0].info["REF_energy"])
    model_file = tmp_path / "model.model"
    assert runner.invoke(pyacemaker, ["export", str(model.pk), str(model_file)]).exit_code == 0
    assert model_file.read_bytes() == model.get_content(mode="rb")
    missing = runner.invoke(pyacemaker, ["export-history", "no-such-campaign", str(tmp_path / "h.xyz")])
    assert missing.exit_code != 0 and "no history for campaign `no-such-campaign`" in missing.output
    wrong = runner.invoke(pyacemaker, ["show", "999999"])
    assert wrong.exit_code != 0 and "no single node" in wrong.output
