"""Replay sampling at scale: histories of 1k, 10k and 100k labelled structures in the provenance graph.

Each history is a campaign group of batches of 1000 labelled 8-atom Si cells, built in bulk (geometry rattled
at random, labels random numbers: the values do not matter for sampling). Timed: finding the history's batches
(QueryBuilder), drawing a 1000-row random replay sample and writing the training set node (the
``build_training_set`` calcfunction with its provenance, as IncrementalTrainingWorkChain runs it), 10 new rows.
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


def time_sample(campaign: str, new, repeats: int = 3) -> float:
    from aiida import orm

    from aiida_pyacemaker.calculations.functions.training import build_training_set
    from aiida_pyacemaker.data.history import get_history, history_batches

    settings = {"buffer_size": BATCH + len(new), "strategy": "random", "min_share": 0.0, "replay_weight": 1.0}
    timings = []
    for repeat in range(repeats):
        start = time.perf_counter()
        batches = history_batches(get_history(campaign))
        history = {f"history_{index:05d}": batch for index, batch in enumerate(batches)}
        training = build_training_set(new, orm.Dict({**settings, "seed": repeat}), **history)["training_set"]
        timings.append(time.perf_counter() - start)
        assert len(training) == BATCH + len(new), (len(training), training.base.attributes.get("replay"))
    return min(timings)


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
        seconds[size] = time_sample(f"scale-{size}", new)
        print(f"history={size} built_in={built:.1f}s replay_1k_sample_and_write={seconds[size]:.3f}s")
    print(
        f"replay_sample_seconds_100k={seconds[100_000]:.3f} growth_10k_to_100k={seconds[100_000] / seconds[10_000]:.2f}"
    )


if __name__ == "__main__":
    main()
