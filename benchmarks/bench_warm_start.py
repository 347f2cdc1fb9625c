"""Warm start versus refit from scratch, and forgetting with and without replay (PacemakerCalculation).

Data, labelled by the tiny MACE committee (mean of the 3 models; models/tiny-si): set 1 = rattled, strained
bulk Si (8- and 16-atom cells), set 2 = a different domain, Si cells with a vacancy. Fits (fast protocol basis):
  A: set 1 from scratch;
  (a) set 2 + a replay sample of set 1, warm start from A;  (b) set 2 only, warm start from A;
  (c) set 1 + set 2 from scratch.
Every fit sees the same test set (set-1 test + set-2 test). Time to reach (c)'s final test force RMSE is read from
pacemaker's own log timestamps (from the log's first line to the first iteration at or below it), so AiiDA's
overhead, the same for every arm, is left out. Forgetting = set-1 test force RMSE after / before (after A), and
against what this basis can do on both sets: after (a) / after (c), the joint refit from scratch on all the data with
the same basis and as many iterations as the warm update (a) (when --maxiter and --warm-maxiter differ, an extra
joint fit (c') with --warm-maxiter iterations is run for it).
Last line: warm_start_time_ratio=<a/c> forgetting_with_replay=<a/A> forgetting_without_replay=<b/A>
forgetting_vs_joint=<a/c> (target <= 1.05)
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import re

import numpy as np
from _profile import temporary_profile

TINY_SI = pathlib.Path(__file__).resolve().parent.parent / "models" / "tiny-si"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
_ITERATION = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) I - Iteration\s+#(\d+)")


def make_sets(seed: int = 0) -> dict[str, list]:
    """Teacher-labelled structures: set 1 (bulk) and set 2 (vacancies), each split into train and test."""
    from ase.build import bulk
    from mace.calculators import MACECalculator

    rng = np.random.default_rng(seed)
    teacher = MACECalculator(
        model_paths=sorted(str(p) for p in TINY_SI.glob("mace_si_tiny_s*.model")),
        device="cpu",
        default_dtype="float64",
    )

    def cell(vacancy: bool, index: int):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((1 + index % 2, 1, 1))
        strain = np.eye(3) + np.diag(rng.uniform(-0.02, 0.02, 3))
        atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
        if vacancy:
            del atoms[int(rng.integers(len(atoms)))]
        atoms.positions += rng.normal(scale=rng.uniform(0.03, 0.12), size=atoms.positions.shape)
        atoms.calc = teacher
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        return atoms

    set1 = [cell(False, i) for i in range(120)]
    set2 = [cell(True, i) for i in range(120)]
    return {"set1_train": set1[:100], "set1_test": set1[100:], "set2_train": set2[:100], "set2_test": set2[100:]}


def stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def time_to_reach(node, target_rmse_f: float) -> float | None:
    """Seconds from the start of pacemaker's log to the first iteration whose test force RMSE <= target."""
    retrieved = node.outputs.retrieved.base.repository
    log = retrieved.get_object_content("log.txt", mode="r").splitlines()
    start = next(stamp(m.group(1)) for line in log if (m := _STAMP.match(line)))
    iteration_time = {int(m.group(2)): stamp(m.group(1)) for line in log if (m := _ITERATION.match(line))}
    curve = node.outputs.learning_curve
    for iteration, rmse in zip(curve.get_array("test_iter_num"), curve.get_array("test_rmse_f_comp"), strict=True):
        if rmse <= target_rmse_f:
            # The final evaluations are numbered past the last logged iteration: take the latest one logged.
            logged = max(k for k in iteration_time if k <= int(iteration))
            return (iteration_time[logged] - start).total_seconds()
    return None


def force_rmse(potential, structures: list) -> float:
    """Force RMSE per component (eV/A) on teacher-labelled structures: the work chain's forgetting metric."""
    from aiida_pyacemaker.data import LabelledStructuresData
    from aiida_pyacemaker.evaluation import rmse_by_domain

    (domain,) = rmse_by_domain(potential, LabelledStructuresData.from_atoms(structures, source="mace")).values()
    return domain["rmse_f_mev_per_a"] / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maxiter", type=int, default=300, help="iterations of the fits from scratch")
    parser.add_argument("--warm-maxiter", type=int, default=300, help="iterations of the warm starts")
    parser.add_argument("--replay", type=int, default=50, help="replay rows from set 1 in arm (a)")
    parser.add_argument("--functions", type=int, default=40, help="basis functions per element")
    parser.add_argument("--kappa", type=float, default=0.6, help="pacemaker's force share of the loss")
    args = parser.parse_args()
    temporary_profile()

    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_pyacemaker.calculations.pacemaker import PacemakerCalculation
    from aiida_pyacemaker.data import LabelledStructuresData
    from aiida_pyacemaker.workflows.pacemaker.base import PacemakerBaseWorkChain

    sets = make_sets()
    test_set = LabelledStructuresData.from_atoms(sets["set1_test"] + sets["set2_test"], source="mace").store()
    code = orm.load_code("pacemaker@localhost")
    base = {
        **PacemakerBaseWorkChain.get_protocol_inputs("fast")["pacemaker"]["parameters"],
        "display_step": 5,
        "number_of_functions_per_element": args.functions,
        "kappa": args.kappa,
    }

    def fit(train: list, label: str, previous=None, maxiter: int | None = None):
        parameters = {**base, "maxiter": maxiter or args.maxiter, "warm_start_maxiter": args.warm_maxiter}
        inputs = {"training_set": LabelledStructuresData.from_atoms(train, source="mace"), "test_set": test_set}
        if previous is not None:
            inputs["previous_potential"] = previous
        _, node = run_get_node(PacemakerCalculation, code=code, parameters=orm.Dict(parameters), **inputs)
        assert node.is_finished_ok, f"{label}: {node.exit_message}"
        metrics = node.outputs.metrics.get_dict()
        print(
            f"{label}: {metrics['iterations']} iterations, test force RMSE {metrics['test_rmse_f_mev_per_a']:.1f} meV/A"
        )
        return node

    rng = np.random.default_rng(1)
    replay = [sets["set1_train"][i] for i in rng.choice(len(sets["set1_train"]), args.replay, replace=False)]
    node_a0 = fit(sets["set1_train"], "A   (set 1, scratch)")
    previous = node_a0.outputs.potential
    node_a = fit(sets["set2_train"] + replay, "(a) (set 2 + replay, warm)", previous)
    node_b = fit(sets["set2_train"], "(b) (set 2, warm, no replay)", previous)
    node_c = fit(sets["set1_train"] + sets["set2_train"], "(c) (set 1 + set 2, scratch)")

    target = node_c.outputs.learning_curve.get_array("test_rmse_f_comp")[-1]
    time_c = time_to_reach(node_c, target)
    time_a = time_to_reach(node_a, target)
    before = force_rmse(previous, sets["set1_test"])
    after_a = force_rmse(node_a.outputs.potential, sets["set1_test"])
    after_b = force_rmse(node_b.outputs.potential, sets["set1_test"])
    joint = force_rmse(node_c.outputs.potential, sets["set1_test"])
    node_joint = node_c
    if args.warm_maxiter != args.maxiter:  # the joint refit of forgetting_vs_joint: as many iterations as (a)
        label = f"(c') (as (c), {args.warm_maxiter} iterations)"
        node_joint = fit(sets["set1_train"] + sets["set2_train"], label, maxiter=args.warm_maxiter)
    joint_same = force_rmse(node_joint.outputs.potential, sets["set1_test"])
    iterations = {label: node.outputs.metrics["iterations"] for label, node in (("(a)", node_a), ("joint", node_joint))}
    print(f"target (c) test force RMSE: {target * 1000:.1f} meV/A; reached by (c) after {time_c:.1f} s")
    if time_a is None:
        final_a = node_a.outputs.learning_curve.get_array("test_rmse_f_comp")[-1] * 1000
        print(f"(a) did NOT reach it within {args.warm_maxiter} iterations (final {final_a:.1f} meV/A)")
    else:
        print(f"(a) reached it after {time_a:.1f} s")
    print(
        f"set-1 test force RMSE (meV/A): after A {before * 1000:.1f}, after (a) {after_a * 1000:.1f}, "
        f"after (b) {after_b * 1000:.1f}; the joint fit (c) {joint * 1000:.1f} (what this basis can do on both)"
    )
    print(
        f"forgetting vs joint: set-1 test force RMSE after (a) {after_a * 1000:.1f} / after the joint refit "
        f"{joint_same * 1000:.1f} meV/A (iterations run: {iterations})"
    )
    ratio = (time_a / time_c) if (time_a is not None and time_c) else float("inf")
    print(
        f"warm_start_time_ratio={ratio:.3f} forgetting_with_replay={after_a / before:.3f} "
        f"forgetting_without_replay={after_b / before:.3f} forgetting_vs_joint={after_a / joint_same:.3f}"
    )


if __name__ == "__main__":
    main()
