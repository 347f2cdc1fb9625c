"""Replay at scale: the whole history update of IncrementalTrainingWorkChain over 1k, 10k and 100k labelled rows.

Each history is a campaign group of batches of 1000 labelled 8-atom Si cells, built in bulk (geometry rattled
at random, labels random numbers: the values do not matter for sampling). Timed, as the work chain does it before
the fit (``append_to_history`` then ``sample_training_set``) for 10 new rows: finding the history's batches
(QueryBuilder), ``select_new_rows`` (reads every batch's fingerprints, writes the appended rows), adding them to the
group, ``build_training_set`` (a 1000-row random replay sample, the training set node written, provenance included).
Between repeats the appended batch is taken out of the group again (off the clock), so every repeat sees the same
history and appends the same 10 rows.
Last line: ``replay_sample_seconds_100k=<s> growth_10k_to_100k=<t100k/t10k>`` (target <= 2 s, growth << 10).
"""

from __future__ import annotations

import time

import numpy as np
from _profile import temporary_profile

BATCH = 1000


def labelled_batch(seed: int, template=None):
    """A batch of ``BATCH`` labelled cells; after the first, arrays are copied and re-rattled (fast)."""
    from ase.build import bulk

    from aiida_pyacemaker.data import LabelledStructuresData

    rng = np.random.default_rng(seed)
    if template is None:
        structures = []
        for _ in range(BATCH):
            atoms = bulk("Si", "diamond", a=5.43, cubic=True)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            atoms.info["REF_energy"] = float(rng.normal(-1110, 1))
            atoms.arrays["REF_forces"] = rng.normal(size=(8, 3))
            structures.append(atoms)
        return LabelledStructuresData.from_atoms(structures, source="mace")
    node = LabelledStructuresData()
    for name in template.get_arraynames():
        node.set_array(name, template.get_array(name))
    node.set_array("positions", template.get_array("positions") + rng.normal(scale=0.05, size=(8 * BATCH, 3)))
    node.set_array("energy", rng.normal(-1110, 1, size=BATCH))
    node.finalise()
    return node


def build_history(campaign: str, size: int, template) -> None:
    from aiida_pyacemaker.data.history import get_history

    group = get_history(campaign)
    nodes = [labelled_batch(seed, template).store() for seed in range(size // BATCH)]
    group.add_nodes(nodes)


def time_update(campaign: str, new, repeats: int = 3) -> list[float]:
    """The ``repeats`` walls of the whole update (IncrementalTrainingWorkChain's two steps before the fit)."""
    from aiida import orm

    from aiida_pyacemaker.calculations.functions.training import build_training_set, select_new_rows
    from aiida_pyacemaker.data.history import get_history, history_batches

    settings = {"buffer_size": BATCH + len(new), "strategy": "random", "min_share": 0.0, "replay_weight": 1.0}
    timings = []
    for repeat in range(repeats):
        start = time.perf_counter()
        group = get_history(campaign)
        older = history_batches(group)
        history = {f"history_{index:05d}": batch for index, batch in enumerate(older)}
        appended = select_new_rows(new, **history)["appended"]
        group.add_nodes(appended)
        training = build_training_set(new, orm.Dict({**settings, "seed": repeat}), **history)["training_set"]
        timings.append(time.perf_counter() - start)
        group.remove_nodes(appended)
        assert len(appended) == len(new), len(appended)
        assert len(training) == BATCH + len(new), (len(training), training.base.attributes.get("replay"))
    return timings


def main() -> None:
    temporary_profile()
    from aiida_pyacemaker.data import LabelledStructuresData

    template = labelled_batch(0).store()
    new = LabelledStructuresData.gather([(labelled_batch(10**6, template), range(10))]).store()
    seconds = {}
    for size in (1_000, 10_000, 100_000):
        start = time.perf_counter()
        build_history(f"scale-{size}", size, template)
        built = time.perf_counter() - start
        timings = time_update(f"scale-{size}", new)
        seconds[size] = min(timings)
        print(
            f"history={size} built_in={built:.1f}s whole update (select_new_rows + build_training_set): "
            f"best {seconds[size]:.3f}s of {', '.join(f'{t:.3f}' for t in timings)}"
        )
    print(
        f"replay_sample_seconds_100k={seconds[100_000]:.3f} growth_10k_to_100k={seconds[100_000] / seconds[10_000]:.2f}"
    )


if __name__ == "__main__":
    main()
