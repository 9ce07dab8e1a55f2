"""Data-parallel meta-training on ``torch.distributed`` (``train.processes``).

Every rank draws the same meta-batch from the same seeded generator, meta-trains on its share
of the tasks (a contiguous slice: :class:`Shard`), and one all-reduce averages the shares'
meta-gradients, weighted by their task counts, so every rank takes the same Adam step on the
mean over the whole meta-batch: the numbers do not depend on the number of ranks beyond
round-off (``tests/test_distributed.py``: 1 and 2 ranks in float64, 1e-10). Rank 0 alone
meta-validates and keeps the best parameters.

The train stage launches the ranks with ``torchrun`` (:func:`launch`; backend ``gloo`` on CPU,
``nccl`` on CUDA, one GPU a rank) and waits; rank 0 hands its results back through a file, and
the stage logs them to MLflow and writes the outputs, as for one process. A rank that fails
fails the stage with that rank's error, and nothing is written.

Several machines: ``METALEARN_TORCHRUN`` replaces the launcher's ``--standalone`` with torchrun's
rendezvous options (``--nnodes=2 --node-rank=0 --master-addr=HOST --master-port=PORT``) on the
machine that runs the stage, and every other machine joins with its own ranks::

    python -m metalearn.distributed prepare JOB learner=maml benchmark=omniglot-way5shot1
    torchrun --nnodes=2 --node-rank=1 --master-addr=HOST --master-port=PORT \
        --nproc-per-node=N -m metalearn.distributed JOB

(docs/scale.md). Each machine needs the repository at the same commit and params, and the
benchmark's episodes (``dvc repro episodify@<benchmark>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from metalearn import paths
from metalearn.cell import TrainCell
from metalearn.config import load_config, split_cli
from metalearn.data.episodes import load_episodes
from metalearn.errors import StageError
from metalearn.lifetime import die_with_parent
from metalearn.runtime import torch_runtime
from metalearn.shard import Shard
from metalearn.spec import train_cell
from metalearn.training import TrainResult, meta_train, training_seeds


class DistributedError(StageError, RuntimeError):
    """A rank of a data-parallel meta-training failed; the message is that rank's error."""


def launch(cell: TrainCell) -> list[Any]:
    """Meta-train ``cell``'s seeds on ``cell.processes`` ranks of this machine (torchrun) and
    return rank 0's :class:`metalearn.training.TrainResult` of each seed."""
    with tempfile.TemporaryDirectory(prefix="metalearn-ranks-") as job:
        Path(job, "cell.json").write_text(json.dumps(cell.to_dict()))
        rendezvous = os.environ.get("METALEARN_TORCHRUN", "--standalone").split()
        command = [
            sys.executable, "-m", "torch.distributed.run", *rendezvous,
            f"--nproc-per-node={cell.processes}", "-m", "metalearn.distributed", job,
        ]  # fmt: skip
        env = {**os.environ, "TORCHELASTIC_ERROR_FILE": str(Path(job, "error.json"))}
        # its own session: a signal or error here stops torchrun and every rank it started
        ranks = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            _, stderr = ranks.communicate()
        finally:
            _stop(ranks)
        if ranks.returncode != 0:
            raise DistributedError(
                f"{cell.learner} on {cell.benchmark}: a rank of {cell.processes} failed: "
                f"{_rank_error(stderr)}"
            )
        saved = torch.load(Path(job, "results.pt"), weights_only=True)
    return [TrainResult(**fields) for fields in saved]


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """End ``process`` and its session (torchrun and its ranks), if still running."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # torchrun passes it on to the ranks
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _rank_error(stderr: str) -> str:
    """The failing rank's own error line from torchrun's report (else stderr's last line)."""
    errors = re.findall(r"^\s*(?:\w+\.)*\w*(?:Error|Exception): .*$", stderr, flags=re.M)
    own = [e.strip() for e in errors if "ChildFailedError" not in e]
    if own:
        return own[-1]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def rank_main(job: Path) -> None:
    """One rank: join the group, meta-train every seed on this rank's shares, and on rank 0
    write the results for :func:`launch`."""
    die_with_parent()  # torchrun killed: no rank trains on
    cell = TrainCell.from_dict(json.loads(Path(job, "cell.json").read_text()))
    device = torch_runtime(cell)
    if device.type == "cuda":  # one GPU a rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        shard = Shard(dist.get_rank(), dist.get_world_size())
        source = load_episodes(paths.episodes(cell.benchmark))
        results = [
            meta_train(dataclasses.replace(cell, seed=s), source, device, shard=shard)
            for s in training_seeds(cell)
        ]
        if shard.rank == 0:
            fields = [dataclasses.asdict(r) for r in results]
            torch.save(fields, Path(job, "results.pt"))
    finally:
        dist.destroy_process_group()


def prepare(job: Path, argv: list[str]) -> None:
    """Write the job folder of ``learner=… benchmark=… [overrides]`` for ranks started by hand
    on another machine (the stage writes its own)."""
    selected, overrides = split_cli(argv)
    cell = train_cell(load_config(overrides), selected["learner"], selected["benchmark"])
    job.mkdir(parents=True, exist_ok=True)
    Path(job, "cell.json").write_text(json.dumps(cell.to_dict()))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), sys.argv[3:])
    else:
        record(rank_main)(Path(sys.argv[1]))
