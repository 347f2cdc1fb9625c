"""Distilled ACE versus ACE fitted on all-DFT labels of the same pool, same basis, on a held-out pw.x test set.

1. A pool of Si candidates (8-atom cells: rattle, strain, vacancy; seeded) and a held-out test set drawn the same way
   with another seed, both labelled once by real pw.x through the TieredOracleWorkChain (every row to DFT) and
   shipped in ``benchmarks/data`` (``label_reference_sets.py`` makes them; the loop's settings, ``ORACLE``).
2. The DistillationWorkChain on the same pool (same seed: the same structures) with the teacher (``--teacher``):
   ``foundation`` (default): the shipped foundation-class model ``models/si-foundation``, ONE model, latent-distance
   uncertainty, calibrated on the campaign's DFT rows, labelled with another pseudopotential than the campaign's
   DFT (a systematic offset, as a real foundation model has); ``tiny-committee``: the three tiny models. A DFT
   budget of ``--budget`` pw.x calls (run for real), Phase 4 fine-tuning on.
3. ACE on all-DFT labels of the pool, and ACE on as many pw.x cells as the campaign used, drawn at random from the
   pool (PacemakerCalculation, the loop's basis and fit settings, as many iterations as the loop's fits together).
   All are evaluated on the test set.

Last line: ``dft_fraction=… rmse_ratio=… rmse_vs_budget_dft=… teacher_rmse_ratio=… uncertainty_spearman=…
missed_error_share=…`` (targets <= 0.05, <= 1.2, <= 0.7, reported, >= 0.6, <= 0.05): pw.x calls / pool; distilled /
all-DFT ACE test force RMSE; distilled / budget-matched random-DFT ACE; the teacher's own test force RMSE / all-DFT
ACE's; Spearman rank correlation of the first oracle's calibrated uncertainty with the teacher's true largest atomic
force error over the whole pool (every pool cell has its pw.x label); share of the cells the first oracle accepted
whose true largest atomic force error exceeds twice the acceptance threshold.
Usage: python benchmarks/bench_distillation.py [--teacher foundation|tiny-committee --pool 250 --test 40
--budget 12 --workdir DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

from _profile import temporary_profile

MODELS = pathlib.Path(__file__).resolve().parent.parent / "models"
TINY_SI = MODELS / "tiny-si"
FOUNDATION = MODELS / "si-foundation" / "mace_si_foundation.model"
#: The DFT settings of the loop and of the shipped reference labels: 20/160 Ry (total force within 1 % of 30/240 Ry on
#: a rattled cell), k-spacing 0.6 1/A (2x2x2 for the 8-atom cell), conv_thr 1e-8 Ry; bands from the valence electrons.
ORACLE = {
    "max_concurrent_dft": 2,
    "meta_parameters": {"dft_cutoff_stringency": "low"},
    "dft": {
        "kpoints_distance": 0.6,
        "pw": {"parameters": {"SYSTEM": {"ecutwfc": 20.0, "ecutrho": 160.0}, "ELECTRONS": {"conv_thr": 1.0e-8}}},
    },
}
POOL_SEED, TEST_SEED = 2026, 4242
BUDGET_DRAW_SEED = 7


def policies(total: int) -> dict:
    """The candidate policies with counts summing to ``total``: half rattle, 30 % strain, 20 % vacancy."""
    strain, vacancy = int(0.3 * total), int(0.2 * total)
    return {
        "rattle": {"per_prototype": total - strain - vacancy, "stdev": [0.01, 0.15]},
        "strain": {"per_prototype": strain, "max_strain": 0.04, "stdev": [0.01, 0.08]},
        "vacancy": {"per_prototype": vacancy, "stdev": [0.01, 0.08]},
    }


def shipped_labels(kind: str, size: int, expected: list):
    """The shipped pw.x labels of the pool or test set, checked row by row against the structures drawn here."""
    import numpy as np
    from ase.io import read
    from label_reference_sets import reference_path

    from aiida_pyacemaker.data import LabelledStructuresData

    path = reference_path(kind, size)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run python benchmarks/label_reference_sets.py --pool {size}")
    frames = read(path, index=":")
    assert len(frames) == len(expected), f"{path}: {len(frames)} rows for {len(expected)} structures"
    for frame, atoms in zip(frames, expected, strict=True):
        assert np.allclose(frame.positions, atoms.positions, atol=1e-6), f"{path}: the structures differ"
    return LabelledStructuresData.from_atoms(frames, source="dft")


def fit(labelled, parameters: dict, code):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_pyacemaker.calculations.pacemaker import PacemakerCalculation

    _, node = run_get_node(PacemakerCalculation, code=code, training_set=labelled, parameters=orm.Dict(parameters))
    assert node.is_finished_ok, node.exit_message
    return node.outputs.potential


def teacher_force_rmse(models, test_set) -> float:
    """Force RMSE (meV/A) of the teacher (a committee's mean, or one model) on the test set."""
    import numpy as np
    from mace.calculators import MACECalculator

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, model in enumerate(models):
            path = pathlib.Path(folder) / f"m{index}.model"
            path.write_bytes(model.get_content(mode="rb"))
            paths.append(str(path))
        calculator = MACECalculator(model_paths=paths, device="cpu", default_dtype="float64")
        errors = []
        for atoms in test_set.to_atoms():
            reference = atoms.get_forces()
            atoms.calc = calculator
            errors.append((atoms.get_forces() - reference).ravel())
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2))) * 1000.0


def uncertainty_quality(oracle, pool_labels, accept: float) -> tuple[float, float]:
    """(Spearman of calibrated uncertainty with the teacher's true largest force error over the pool's usable rows,
    share of accepted rows whose true error exceeds twice ``accept``), from the first oracle and the pool labels."""
    import numpy as np

    from aiida_pyacemaker.calibration import largest_force_error, spearman

    (teacher,) = [n for n in oracle.called if n.process_label == "MaceBaseWorkChain"]
    results = teacher.outputs.results
    routing = oracle.outputs.routing
    uncertainty, routes = routing.get_array("uncertainty"), routing.get_array("route")
    reference = pool_labels.to_atoms()
    errors = np.array(
        [largest_force_error(results.record(row)["forces"], reference[row].get_forces()) for row in range(len(routes))]
    )
    usable = np.isfinite(uncertainty)
    accepted = routes == "mace"
    missed = float((errors[accepted] > 2 * accept).mean()) if accepted.any() else 0.0
    print(
        f"first oracle: {int(accepted.sum())} accepted, true largest force error of the accepted: median "
        f"{np.median(errors[accepted]) if accepted.any() else float('nan'):.3f}, max "
        f"{errors[accepted].max() if accepted.any() else float('nan'):.3f} eV/A (threshold {accept})"
    )
    return spearman(uncertainty[usable], errors[usable]), missed


def teacher_models(name: str) -> dict:
    from aiida_pyacemaker.data import MaceModelData

    if name == "foundation":
        if not FOUNDATION.exists():
            raise SystemExit(f"{FOUNDATION} is missing: run python scripts/build_foundation_model.py")
        return {"foundation": MaceModelData.from_file(FOUNDATION)}
    return {f"m{i}": MaceModelData.from_file(p) for i, p in enumerate(sorted(TINY_SI.glob("*.model")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", choices=["foundation", "tiny-committee"], default="foundation")
    parser.add_argument("--pool", type=int, default=250)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--workdir", default=None, help="AIIDA_PATH to keep (reruns take pw.x from the cache)")
    args = parser.parse_args()
    temporary_profile("bench-distillation", args.workdir)

    import numpy as np
    from aiida import orm
    from aiida.engine import run_get_node
    from aiida.manage import get_manager
    from ase.build import bulk

    from aiida_pyacemaker.candidates import make_candidates
    from aiida_pyacemaker.data import LabelledStructuresData, StructureSetData
    from aiida_pyacemaker.evaluation import evaluate
    from aiida_pyacemaker.setup.caching import ensure_caching
    from aiida_pyacemaker.setup.pseudos import DEFAULT_FAMILY, ensure_pseudo_family
    from aiida_pyacemaker.workflows.distillation import DistillationWorkChain

    ensure_caching(get_manager().get_profile().name)
    ensure_pseudo_family(DEFAULT_FAMILY)
    codes = {name: orm.load_code(f"{name}@localhost") for name in ("mace", "pw", "pacemaker", "mace-train")}
    teacher = teacher_models(args.teacher)
    prototype = bulk("Si", "diamond", a=5.43, cubic=True)
    pool_atoms = make_candidates([prototype], policies(args.pool), POOL_SEED)
    test_set = shipped_labels("test", args.test, make_candidates([prototype], policies(args.test), TEST_SEED)).store()
    pool_labels = shipped_labels("pool", args.pool, pool_atoms).store()
    overrides = {
        "pool": {"seed": POOL_SEED, "policies": policies(args.pool)},
        "dft_budget": args.budget,
        "max_iterations": 3,
        "oracle": ORACLE,
        "training": {
            "replay_buffer_size": 1000,
            "pacemaker": {"pacemaker": {"parameters": {"maxiter": 200, "warm_start_maxiter": 60}}},
        },
    }
    builder = DistillationWorkChain.get_builder_from_protocol(
        StructureSetData.from_atoms([prototype]),
        teacher,
        codes["mace"],
        codes["pw"],
        codes["pacemaker"],
        campaign=f"bench-{args.teacher}-{time.time():.0f}",
        mace_train_code=codes["mace-train"],
        overrides=overrides,
    )
    builder.test_set = test_set
    start = time.perf_counter()
    _, loop = run_get_node(builder)
    assert loop.is_finished_ok, (loop.exit_status, loop.exit_message)
    summary = loop.outputs.summary.get_dict()
    print(f"distillation ({args.teacher}): {time.perf_counter() - start:.0f} s, {summary['stop_reason']}", flush=True)
    for record in summary["per_iteration"]:
        print(f"  iteration {record['iteration']}: {record['routes']} test F {record['test_force_rmse_mev_per_a']:.1f}")
    oracles = sorted((n for n in loop.called if n.process_label == "TieredOracleWorkChain"), key=lambda n: n.pk)
    same = oracles[0].inputs.structures.get_array("fingerprints") == pool_labels.get_array("fingerprints")
    assert same.all(), "the loop's pool differs from the reference pool"
    if "calibration" in loop.outputs:
        calibration = loop.outputs.calibration.get_dict()
        print(
            f"calibration ({calibration['uncertainty_kind']}, {calibration['points']} DFT rows): error = "
            f"{calibration['prefactor']:.3g} * u^{calibration['exponent']:.3g} eV/A"
        )

    fits = [n for n in loop.called_descendants if n.process_label == "PacemakerCalculation"]
    parameters = dict(builder.training.pacemaker.pacemaker.parameters.get_dict())  # type: ignore[union-attr]
    parameters["maxiter"] = sum(n.outputs.metrics["iterations"] for n in fits)
    all_dft = fit(pool_labels, parameters, codes["pacemaker"])
    calls = summary["dft_calls"]
    drawn = np.sort(np.random.default_rng(BUDGET_DRAW_SEED).choice(len(pool_labels), size=calls, replace=False))
    budget_dft = fit(LabelledStructuresData.gather([(pool_labels, drawn)]), parameters, codes["pacemaker"])

    measured = {
        "distilled": evaluate(loop.outputs.potential, test_set),
        "all-DFT": evaluate(all_dft, test_set),
        f"random {calls} DFT": evaluate(budget_dft, test_set),
    }
    rmse = {name: value["overall"]["rmse_f_mev_per_a"] for name, value in measured.items()}
    teacher_rmse = teacher_force_rmse(teacher.values(), test_set)
    tuned = sorted(
        (n for n in loop.called_descendants if n.process_label == "MaceTrainCalculation"), key=lambda n: n.pk
    )
    line = f"teacher on the test set: {teacher_rmse:.1f} meV/A"
    if "committee" in loop.outputs:
        line += f", fine-tuned {teacher_force_rmse(loop.outputs.committee.values(), test_set):.1f} meV/A"
    print(line + f" ({len(tuned)} fine-tuning jobs)")
    for name, result in measured.items():
        by_domain = ", ".join(f"{d} {r['rmse_f_mev_per_a']:.1f}" for d, r in sorted(result["by_domain"].items()))
        overall = result["overall"]
        print(
            f"{name}: F {overall['rmse_f_mev_per_a']:.1f} meV/A, E {overall['rmse_e_mev_per_atom']:.1f} meV/atom; "
            f"F by domain (meV/A): {by_domain}"
        )
    accept = oracles[0].inputs.uncertainty_threshold.value
    rho, missed = uncertainty_quality(oracles[0], pool_labels, accept)
    print(f"pool={args.pool} test={len(test_set)} budget={args.budget} fit_iterations={parameters['maxiter']}")
    print(
        f"dft_fraction={calls / args.pool:.3f} rmse_ratio={rmse['distilled'] / rmse['all-DFT']:.3f} "
        f"rmse_vs_budget_dft={rmse['distilled'] / rmse[f'random {calls} DFT']:.3f} "
        f"teacher_rmse_ratio={teacher_rmse / rmse['all-DFT']:.3f} uncertainty_spearman={rho:.3f} "
        f"missed_error_share={missed:.3f}"
    )


if __name__ == "__main__":
    main()
