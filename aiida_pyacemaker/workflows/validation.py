"""``ValidationWorkChain`` (Phase 2): the physics of an ACE potential against the teacher and DFT.

For one prototype crystal every engine labels the same kind of structures (``aiida_pyacemaker.properties``):

1. the equation of state (primitive cell, ``eos_points`` volumes within +-``eos_span``): Birch-Murnaghan a0, B0;
2. around each engine's own equilibrium: C11, C12, C44 by finite strain with relaxed ions, phonons by finite
   displacements (phonopy: bands on the standard path, DOS, imaginary modes), the vacancy formation energy in a
   supercell (ions relaxed);
3. for the ACE potential: MD stability (``AceMdBaseWorkChain`` in ``stability`` mode: NVT, then NVE drift, on at
   least 64 atoms).

ACE and the teacher label through ``EvaluateBaseWorkChain``, DFT through aiida-quantumespresso's
``PwBaseWorkChain`` (``relax`` for the rows with relaxed ions) with the campaign's DFT settings. The result is one
``table`` node (property, ACE, teacher, DFT, relative errors against DFT) and ``curves`` (EOS points, phonon
bands and DOS) for the figures (``aiida-pyacemaker validate``).
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_
from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

from ..calculations.functions.validation import (
    dft_labels,
    eos_tasks,
    fit_equation_of_state,
    property_tasks,
    validation_table,
)
from ..data.ace_potential import AcePotentialData
from ..data.mace_model import MaceModelData
from ..data.structure_set import StructureSetData
from ..dft import bands_for_pseudos
from ..properties import STAGE_2_PROPERTIES, format_md, format_table, validate_settings
from ..protocols import ProtocolMixin, as_input_nodes, builder_inputs, nested_builder
from .ace_md.base import AceMdBaseWorkChain
from .evaluate.base import EvaluateBaseWorkChain

run_if: Any = if_

EVALUATE_SET_BY_CHAIN = ("evaluate.potential", "evaluate.structure_set")
MD_SET_BY_CHAIN = ("md.potential", "md.structure_set")


def validate_settings_port(value: orm.Dict | None, _) -> str | None:
    return validate_settings(value.get_dict()) if value is not None else None


def validate_inputs(inputs: dict[str, Any], _) -> str | None:
    prototype = inputs.get("prototype")
    if prototype is None:
        return None
    atoms = prototype.get_ase()
    for name in ("potential", "teacher"):
        node = inputs.get(name)
        if node is not None and (missing := sorted(set(atoms.get_chemical_symbols()) - set(node.elements))):
            return f"the prototype contains {missing}, which the {name} does not know"
    return None


class ValidationWorkChain(ProtocolMixin, WorkChain):
    """EOS, elastic constants, phonons, vacancy and MD stability of an ACE potential, beside the teacher and DFT."""

    _protocol_file = "validation"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("potential", valid_type=AcePotentialData, help="The ACE potential to validate.")
        spec.input("prototype", valid_type=orm.StructureData, help="The crystal (cubic for C11, C12, C44).")
        spec.input(
            "settings", valid_type=orm.Dict, validator=validate_settings_port, help="See properties.DEFAULT_SETTINGS."
        )
        spec.input("teacher", valid_type=MaceModelData, required=False, help="The teacher model, compared too.")
        spec.expose_inputs(EvaluateBaseWorkChain, namespace="evaluate", exclude=EVALUATE_SET_BY_CHAIN)
        spec.expose_inputs(
            PwBaseWorkChain,
            namespace="dft",
            exclude=("pw.structure",),
            namespace_options={"required": False, "populate_defaults": False, "help": "DFT reference; off if absent."},
        )
        spec.expose_inputs(
            AceMdBaseWorkChain,
            namespace="md",
            exclude=MD_SET_BY_CHAIN,
            namespace_options={"required": False, "populate_defaults": False, "help": "MD stability; off if absent."},
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.run_equation_of_state,
            cls.inspect_equation_of_state,
            cls.run_properties,
            cls.inspect_properties,
            run_if(cls.should_run_md)(cls.run_md_stability, cls.inspect_md_stability),
            cls.results,
        )
        spec.output("table", valid_type=orm.Dict, help="Per property: ACE, teacher, DFT, relative errors; MD.")
        spec.output("curves", valid_type=orm.ArrayData, help="EOS points, phonon bands and DOS per engine.")
        spec.exit_code(
            430, "ERROR_EVALUATION_FAILED", message="The {engine} labels failed ({process}<{pk}>): {message}"
        )
        spec.exit_code(
            431, "ERROR_MD_FAILED", message="The MD stability run failed (AceMdBaseWorkChain<{pk}>): {message}"
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        evaluate_code: orm.AbstractCode,
        potential: AcePotentialData | None,
        prototype: orm.StructureData | None,
        teacher: MaceModelData | None = None,
        pw_code: orm.AbstractCode | None = None,
        md_code: orm.AbstractCode | None = None,
        dft_inputs: dict[str, Any] | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        **_,
    ):
        """A builder from ``protocols/validation.yaml``. DFT is on with ``dft_inputs`` (a ``PwBaseWorkChain``
        namespace without the structure, e.g. the oracle's ``dft``) or ``pw_code`` (set up for the prototype by the
        plugin's DFT defaults); MD stability with ``md_code``. A parent that sets the potential and prototype itself
        passes None for them."""
        from ..dft import get_pw_builder

        name = protocol or cls.get_default_protocol()
        inputs = cls.get_protocol_inputs(protocol, overrides)
        evaluate = nested_builder(
            "evaluate",
            EvaluateBaseWorkChain.get_builder_from_protocol,
            evaluate_code,
            protocol=name,
            overrides=inputs.pop("evaluate", None),
        )
        md_overrides = inputs.pop("md", None)
        builder = cls.get_builder()
        for key, value in as_input_nodes(cls.spec().inputs, inputs).items():
            builder[key] = value
        if potential is not None:
            builder.potential = potential
        if prototype is not None:
            builder.prototype = prototype
        if teacher is not None:
            builder.teacher = teacher
        evaluate_inputs = builder_inputs(evaluate)
        evaluate_inputs["evaluate"] = {
            k: v for k, v in evaluate_inputs["evaluate"].items() if k not in ("potential", "structure_set")
        }
        builder.evaluate = evaluate_inputs
        if dft_inputs is None and pw_code is not None and prototype is not None:
            dft_inputs = builder_inputs(get_pw_builder(pw_code, prototype, protocol=name))  # type: ignore[arg-type]
            dft_inputs["pw"].pop("structure")
        if dft_inputs is not None:
            builder.dft = dft_inputs
        if md_code is not None:
            md = nested_builder(
                "md", AceMdBaseWorkChain.get_builder_from_protocol, md_code, protocol=name, overrides=md_overrides
            )
            md_inputs = builder_inputs(md)
            md_inputs["md"] = {k: v for k, v in md_inputs["md"].items() if k not in ("potential", "structure_set")}
            builder.md = md_inputs
        return builder

    def setup(self):
        self.ctx.engines = {"ace": self.inputs.potential}
        if "teacher" in self.inputs:
            self.ctx.engines["teacher"] = self.inputs.teacher
        if "dft" in self.inputs:
            self.ctx.engines["dft"] = None
        self.ctx.eos_tasks = eos_tasks(self.inputs.prototype, self.inputs.settings)
        self.ctx.nodes = {"eos_tasks": self.ctx.eos_tasks}

    def run_equation_of_state(self):
        """Stage 1: every engine labels the EOS volumes."""
        self.report(f"EOS: {len(self.ctx.eos_tasks)} volumes for {', '.join(self.ctx.engines)}")
        return ToContext(**self.submit_labels("eos", self.ctx.eos_tasks))

    def inspect_equation_of_state(self):
        """Each engine's Birch-Murnaghan fit; its equilibrium volume sets its stage-2 structures."""
        for engine in self.ctx.engines:
            labelled = self.collect_labels("eos", engine, self.ctx.eos_tasks)
            if isinstance(labelled, int):
                return self.ctx.failure
            self.ctx.nodes[f"{engine}_eos"] = labelled
            fit = fit_equation_of_state(self.ctx.eos_tasks, labelled)
            which = self.inputs.settings.get("dft_properties", list(STAGE_2_PROPERTIES))
            which = which if engine == "dft" else list(STAGE_2_PROPERTIES)
            if which:
                self.ctx.nodes[f"{engine}_property_tasks"] = property_tasks(
                    self.inputs.prototype, fit, self.inputs.settings, orm.List(which)
                )
            self.report(f"{engine}: V0 {fit['volume_per_atom']:.3f} A^3/atom, B0 {fit['bulk_modulus_gpa']:.1f} GPa")
        return None

    def run_properties(self):
        """Stage 2: strains, phonon displacements and vacancy supercells, each engine at its own volume."""
        futures = {}
        for engine in self.stage_2_engines():
            futures.update(self.submit_labels("properties", self.ctx.nodes[f"{engine}_property_tasks"], engine))
        return ToContext(**futures)

    def stage_2_engines(self) -> list[str]:
        return [engine for engine in self.ctx.engines if f"{engine}_property_tasks" in self.ctx.nodes]

    def inspect_properties(self):
        for engine in self.stage_2_engines():
            labelled = self.collect_labels("properties", engine, self.ctx.nodes[f"{engine}_property_tasks"])
            if isinstance(labelled, int):
                return self.ctx.failure
            self.ctx.nodes[f"{engine}_properties"] = labelled
        return None

    def should_run_md(self) -> bool:
        return "md" in self.inputs

    def run_md_stability(self):
        inputs = self.exposed_inputs(AceMdBaseWorkChain, namespace="md")
        inputs["md"] = {
            **inputs["md"],
            "potential": self.inputs.potential,
            "structure_set": StructureSetData.from_structures([self.inputs.prototype]),
        }
        return ToContext(md=self.submit(AceMdBaseWorkChain, **inputs))

    def inspect_md_stability(self):
        node = self.ctx.md
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_MD_FAILED.format(pk=node.pk, message=node.exit_message or "")
        self.ctx.nodes["md_summary"] = node.outputs.summary
        return None

    def results(self):
        outputs = validation_table(self.inputs.prototype, self.inputs.settings, **self.ctx.nodes)
        table = outputs["table"]
        assert isinstance(table, orm.Dict)
        self.out("table", table)
        self.out("curves", outputs["curves"])
        text = format_table(table["rows"], table["engines"])
        if "md" in table.get_dict():
            text += "\n" + format_md(table["md"])
        self.report("validation table\n" + text)

    # --- labels by engine: ACE and the teacher through EvaluateBaseWorkChain, DFT through PwBaseWorkChain -----------

    def submit_labels(self, stage: str, tasks: StructureSetData, only: str | None = None) -> dict[str, Any]:
        futures = {}
        for engine, potential in self.ctx.engines.items():
            if only is not None and engine != only:
                continue
            if potential is not None:
                inputs = self.exposed_inputs(EvaluateBaseWorkChain, namespace="evaluate")
                inputs["evaluate"] = {**inputs["evaluate"], "potential": potential, "structure_set": tasks}
                futures[f"{stage}_{engine}"] = self.submit(EvaluateBaseWorkChain, **inputs)
                continue
            relax = tasks.get_array("relax")
            for index, structure in enumerate(tasks.to_atoms()):
                futures[f"{stage}_dft_{index:03d}"] = self.submit(
                    PwBaseWorkChain, **self.dft_inputs(orm.StructureData(ase=structure), bool(relax[index]))
                )
        return futures

    def dft_inputs(self, structure: orm.StructureData, relax: bool) -> dict[str, Any]:
        inputs = self.exposed_inputs(PwBaseWorkChain, namespace="dft")
        parameters = inputs["pw"]["parameters"].get_dict()
        parameters.setdefault("CONTROL", {})["calculation"] = "relax" if relax else "scf"
        parameters["CONTROL"].update(tprnfor=True, tstress=True)
        parameters.setdefault("SYSTEM", {})["nbnd"] = bands_for_pseudos(structure, inputs["pw"]["pseudos"])
        if relax:
            parameters.setdefault("IONS", {})
        return {**inputs, "pw": {**inputs["pw"], "structure": structure, "parameters": orm.Dict(parameters)}}

    def collect_labels(self, stage: str, engine: str, tasks: StructureSetData):
        """The engine's ``LabelledStructuresData`` for ``tasks``; on a failure sets ``ctx.failure`` and returns 1."""
        if engine != "dft":
            node = self.ctx[f"{stage}_{engine}"]
            if not node.is_finished_ok:
                return self.fail_with(engine, node)
            return node.outputs.labelled
        outputs = {}
        relax = tasks.get_array("relax")
        for index in range(len(tasks)):
            node = self.ctx[f"{stage}_dft_{index:03d}"]
            if not node.is_finished_ok:
                return self.fail_with(engine, node)
            outputs[f"parameters_{index:03d}"] = node.outputs.output_parameters
            outputs[f"trajectory_{index:03d}"] = node.outputs.output_trajectory
            if relax[index]:
                outputs[f"structure_{index:03d}"] = node.outputs.output_structure
        return dft_labels(tasks, **outputs)

    def fail_with(self, engine: str, node) -> int:
        self.ctx.failure = self.exit_codes.ERROR_EVALUATION_FAILED.format(
            engine=engine, process=node.process_label, pk=node.pk, message=node.exit_message or ""
        )
        return 1
