"""Independent meta-trainings in worker processes (``train.workers``) give the numbers of the
same trainings run one after another, and a worker's failure reaches the caller."""

import dataclasses

import pytest
import torch

from metalearn import paths
from metalearn.config import load_config
from metalearn.data.episodes import load_episodes
from metalearn.parallel import meta_train_seeds, train_all
from metalearn.spec import train_cell
from metalearn.training import NonFiniteError

BENCHMARK = "cosmixture-shot50"
TINY = [
    "algo.steps=2",
    "algo.maml.steps=null",
    "algo.mamlpp.steps=null",
    "train.iterations=3",
    "train.val_every=1",
    "train.meta_batch=2",
    "train.seeds=3",
    "data.cosmixture.functions={train:6,val:3,test:3}",
    "eval.tasks=3",
    f"~pipeline.benchmarks.{BENCHMARK}.algo",  # its tuned step sizes: the top level's here
]


@pytest.fixture
def tiny(make_workdir):
    make_workdir(TINY)
    return train_cell(load_config(TINY), "fomaml", BENCHMARK)


def test_seeds_in_two_workers_equal_the_seeds_one_after_another(tiny):
    source = load_episodes(paths.episodes(BENCHMARK))
    cpu = torch.device("cpu")
    logged = {1: [], 2: []}
    runs = {
        n: meta_train_seeds(
            dataclasses.replace(tiny, workers=n),
            source,
            cpu,
            on_metrics=lambda step, row, n=n: logged[n].append((step, row)),
        )
        for n in (1, 2)
    }
    assert len(runs[2]) == 3
    for one, two in zip(runs[1], runs[2], strict=True):
        assert one.params.keys() == two.params.keys()
        assert all(torch.equal(one.params[k], two.params[k]) for k in one.params)
        assert one.curve == two.curve and one.best_iteration == two.best_iteration
    assert not torch.equal(runs[2][0].params["head.weight"], runs[2][1].params["head.weight"])
    # every seed's metrics reach the run (with several workers, as each seed ends)
    assert sorted(logged[1], key=repr) == sorted(logged[2], key=repr)


def test_a_recovered_error_is_a_result_and_any_other_is_raised(tiny):
    diverging = dataclasses.replace(tiny, options={**tiny.options, "inner_lr": 1e30})
    jobs = [tiny, diverging]
    done = []
    results = train_all(jobs, 2, recover=(NonFiniteError,), on_done=lambda i, r: done.append(i))
    assert sorted(done) == [0, 1]
    assert results[0].curve and isinstance(results[1], NonFiniteError)
    with pytest.raises(FileNotFoundError):
        train_all([tiny, dataclasses.replace(tiny, benchmark="alpine-shot50")], 2)
