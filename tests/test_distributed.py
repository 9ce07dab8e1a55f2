"""Data-parallel meta-training (``train.processes``): task sampling does not depend on the number
of ranks, so 1 and 2 ranks reach the same meta-parameters; the stage launches real torchrun
ranks, and a rank that fails fails the stage with its error and writes nothing."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metalearn import paths
from metalearn.config import ConfigError, load_config
from metalearn.data.episodes import load_episodes
from metalearn.distributed import DistributedError
from metalearn.shard import Shard
from metalearn.spec import train_cell
from metalearn.stages import train as train_stage
from metalearn.training import meta_train

B = "cosmixture-shot50"
TINY = [
    "algo.steps=2",
    "algo.maml.steps=null",
    "algo.mamlpp.steps=null",
    "train.iterations=3",
    "train.val_every=1",
    "train.meta_batch=5",  # 3 + 2 tasks on two ranks: unequal shares are weighted
    "train.seeds=1",
    "model.hidden=[8]",
    "eval.tasks=3",
    "data.cosmixture.functions={train:6,val:3,test:3}",
    f"~pipeline.benchmarks.{B}.algo",  # its tuned step sizes: the top level's here
]


def test_the_shares_cover_the_meta_batch_once():
    for n, world in ((5, 2), (32, 3), (4, 4)):
        bounds = [Shard(r, world).bounds(n) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_processes_are_checked_against_the_meta_batch_and_workers():
    with pytest.raises(ConfigError, match=r"train\.processes = 9: .* only 5 tasks"):
        load_config([*TINY, "train.processes=9"])
    with pytest.raises(ConfigError, match=r"use one of them"):
        load_config([*TINY, "train.processes=2", "train.workers=2"])


class Float64Source:
    """A task source whose tasks are float64."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return getattr(self.source, name)

    def _cast(self, tree):
        return torch.utils._pytree.tree_map(
            lambda t: t.double() if t.is_floating_point() else t, tree
        )

    def sample_train(self, n, generator):
        return self._cast(self.source.sample_train(n, generator))

    def fixed_tasks(self, split):
        return self._cast(self.source.fixed_tasks(split))


def _rank(rank, world, port, cell, folder, out):
    import metalearn.training

    draw = metalearn.training.init_params  # float64 meta-parameters, as the tasks
    metalearn.training.init_params = lambda model, rng, device=None: draw(
        model, rng, torch.float64, device
    )
    os.chdir(folder)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        source = Float64Source(load_episodes(paths.episodes(B)))
        result = meta_train(cell, source, torch.device("cpu"), shard=Shard(rank, world))
        if rank == 0:
            torch.save(result.params, out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir(make_workdir):
    return make_workdir(TINY)


@pytest.mark.slow
@pytest.mark.parametrize("learner", ["maml", "imaml"])
def test_one_and_two_gloo_ranks_reach_the_same_parameters_in_float64(workdir, learner):
    cell = train_cell(load_config(TINY), learner, B)
    params = {}
    for world in (1, 2):
        out = workdir / f"params{world}.pt"
        mp.spawn(_rank, (world, _free_port(), cell, str(workdir), str(out)), nprocs=world)
        params[world] = torch.load(out, weights_only=True)
    assert params[1]["head.weight"].dtype == torch.float64
    for k, v in params[1].items():
        torch.testing.assert_close(params[2][k], v, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_the_train_stage_launches_torchrun_ranks_and_a_failing_rank_fails_it(workdir, monkeypatch):
    """Real torchrun: 2 ranks train as one process does (float32 round-off apart); then rank 1
    breaks (a sitecustomize patches it) and the stage fails with that rank's error, writing
    nothing and marking its MLflow run FAILED."""
    import mlflow

    one = train_stage.run(train_cell(load_config(TINY), "fomaml", B))
    single = torch.load(paths.model("fomaml", B), weights_only=True)["params"]
    two = train_stage.run(train_cell(load_config([*TINY, "train.processes=2"]), "fomaml", B))
    assert two["iterations"] == one["iterations"] == 3
    ranked = torch.load(paths.model("fomaml", B), weights_only=True)["params"]
    for k, v in single.items():
        torch.testing.assert_close(ranked[k], v, rtol=1e-5, atol=1e-6)

    hook = workdir / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import metalearn.training as t\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('rank 1 lost its episodes')\n"
        "    t.meta_train = broken\n"
    )
    before = {p: p.read_bytes() for p in (workdir / "models").rglob("*.pt")}
    src = Path(__file__).resolve().parents[1] / "src"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), str(src)]))
    with pytest.raises(DistributedError, match=r"a rank of 2 failed: .*rank 1 lost its"):
        train_stage.run(
            train_cell(load_config([*TINY, "train.processes=2", "train.seed=1"]), "fomaml", B)
        )
    assert {p: p.read_bytes() for p in (workdir / "models").rglob("*.pt")} == before
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED"]
    assert json.loads(paths.train_metrics("fomaml", B).read_text())["iterations"] == 3
