"""``ValidationWorkChain``: builders from the protocols offline, and (slow, daemon) a real validation of an ACE
potential against the foundation teacher and pw.x, with MD stability."""

from __future__ import annotations

import pytest
from aiida import orm
from ase.build import bulk

from aiida_pyacemaker.protocols import builder_inputs
from aiida_pyacemaker.workflows.validation import ValidationWorkChain


def si8() -> orm.StructureData:
    return orm.StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))


@pytest.mark.parametrize(
    ("protocol", "dft_properties", "md_steps"),
    [("fast", ["elastic"], 2000), ("balanced", ["elastic", "phonons", "vacancy"], 20000)],
)
def test_builder_from_protocol(
    fixture_code, si_ace_potential, foundation_model, pw_code, pseudo_family, protocol, dft_properties, md_steps
):
    builder = ValidationWorkChain.get_builder_from_protocol(
        fixture_code("pyacemaker.evaluate"),
        si_ace_potential,
        si8(),
        teacher=foundation_model,
        pw_code=pw_code,
        md_code=fixture_code("pyacemaker.ace.md"),
        protocol=protocol,
    )
    inputs = builder_inputs(builder)
    assert inputs["settings"]["dft_properties"] == dft_properties
    assert inputs["md"]["md"]["parameters"]["mode"] == "stability"
    assert inputs["md"]["md"]["parameters"]["steps"] == md_steps
    assert inputs["md"]["md"]["parameters"]["min_atoms"] >= 64
    assert "structure" not in inputs["dft"]["pw"]
    assert "potential" not in inputs["evaluate"]["evaluate"]


def test_prototype_with_unknown_elements_is_refused(fixture_code, si_ace_potential):
    from aiida.engine import run

    builder = ValidationWorkChain.get_builder_from_protocol(
        fixture_code("pyacemaker.evaluate"), si_ace_potential, orm.StructureData(ase=bulk("Cu", "fcc", a=3.6))
    )
    with pytest.raises(ValueError, match=r"the prototype contains \['Cu'\], which the potential does not know"):
        run(builder)


def test_bad_settings_are_refused(fixture_code, si_ace_potential):
    with pytest.raises(ValueError, match="eos_points must be an integer >= 5, got 3"):
        ValidationWorkChain.get_builder_from_protocol(
            fixture_code("pyacemaker.evaluate"), si_ace_potential, si8(), overrides={"settings": {"eos_points": 3}}
        )


@pytest.mark.slow
@pytest.mark.daemon
def test_validation_on_the_daemon_with_real_pw(
    aiida_profile,
    daemon_client,
    submit_and_await,
    evaluate_code,
    ace_md_code,
    si_ace_potential,
    foundation_model,
    pw_code,
    pseudo_family,
    tmp_path,
):
    """ACE, the teacher and pw.x on the same structures; the numbers must be physical for silicon (PBE: a0 about
    5.47 A, B0 about 89 GPa, C44 with relaxed ions about 60-75 GPa), and the figures and the command work."""
    from click.testing import CliRunner

    from aiida_pyacemaker.cli.validate import validate

    builder = ValidationWorkChain.get_builder_from_protocol(
        evaluate_code,
        si_ace_potential,
        si8(),
        teacher=foundation_model,
        pw_code=pw_code,
        md_code=ace_md_code,
        protocol="fast",
        overrides={"md": {"md": {"parameters": {"steps": 1000, "nve_steps": 500}}}},
    )
    if not daemon_client.is_daemon_running:
        daemon_client.start_daemon()
    node = submit_and_await(builder, timeout=1800)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    table = node.outputs.table.get_dict()
    assert table["engines"] == ["ace", "teacher", "dft"]
    values = table["properties"]
    assert 5.40 < values["dft"]["lattice_constant"] < 5.52
    assert 75 < values["dft"]["bulk_modulus_gpa"] < 100
    assert 50 < values["dft"]["c44_gpa"] < 90 and values["dft"]["born_stable"]
    assert "max_frequency_thz" not in values["dft"], "the fast protocol leaves the phonons to the teacher"
    rows = {row["property"]: row for row in table["rows"]}
    assert rows["lattice_constant"]["reference"] == "dft" and rows["max_frequency_thz"]["reference"] == "teacher"
    assert abs(rows["lattice_constant"]["teacher_error_pct"]) < 2.0, "the teacher was trained on PBE silicon"
    for engine in ("ace", "teacher"):
        assert not values[engine]["imaginary_modes"] and 13 < values[engine]["max_frequency_thz"] < 18
    # PBE in a 16-site cell: about 3 eV; the small test ACE (20 functions) is far off but finite and positive
    assert 2 < values["teacher"]["vacancy_formation_energy"] < 5
    assert 0.5 < values["ace"]["vacancy_formation_energy"] < 6
    md = table["md"]
    assert md["md_atoms"] == 64 and md["md_stable_ps"] == pytest.approx(1.5) and md["md_stable"]
    # every DFT number descends from pw.x runs of this work chain; relaxations were `relax` calculations
    relaxations = [
        child
        for child in node.called
        if child.process_label == "PwBaseWorkChain" and child.inputs.pw.parameters["CONTROL"]["calculation"] == "relax"
    ]
    assert len(relaxations) == 4
    plots = tmp_path / "plots"
    result = CliRunner().invoke(validate, [str(si_ace_potential.pk), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    assert "lattice constant a0" in result.output and "MD stability (ACE, 64 atoms" in result.output
    assert {path.name for path in plots.iterdir()} == {"validation_eos.png", "validation_phonons.png"}
