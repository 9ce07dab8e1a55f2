"""The train stage's checkpoint: a learner's trained parameters (every seed's), what it chose in
training, and the spec of the cell that trained it. Tensors and plain values only, read with
``torch.load(weights_only=True)``: nothing in the file is executed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from metalearn import paths
from metalearn.cell import TrainCell
from metalearn.errors import MissingInputError, StageError
from metalearn.spec import dumps


class CheckpointError(StageError, ValueError):
    """A checkpoint that cannot be read, or that another cell wrote."""


def train_stage(cell: TrainCell) -> str:
    """The DVC stage that trains ``cell``."""
    return f"{cell.stage}@{cell.learner}-{cell.benchmark}"


def save_checkpoint(path: Path, params: dict[str, torch.Tensor], **fields: Any) -> None:
    """Write ``params`` (the first seed's best meta-val point), ``fields`` and the digest of
    them all (``digest``: evaluate refuses a file whose values no longer match it) to ``path``."""
    content = {"params": params, **fields}
    torch.save({**content, "digest": content_digest(content)}, path)


def content_digest(value: Any) -> str:
    """A SHA-256 of ``value`` (nested dicts, lists, tensors and plain values): the same for the
    same values, whichever file or device holds them."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"{key!r}:".encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(repr(value).encode())


def load_checkpoint(cell: TrainCell) -> dict[str, Any]:
    """The train stage's file: ``params`` (tensors, of the first seed's best meta-val point),
    ``seed_params`` (every seed's), ``seeds``, ``best_iterations``, ``learner``, ``benchmark``,
    ``mlflow_run_id``, ``fitted`` (options chosen in training), ``grid`` and ``spec``.

    Refuses a file it cannot read and one whose spec is not ``cell``'s, the one its train stage
    would train now (another learner's or benchmark's file copied in, or a stale one), naming
    both."""
    learner, benchmark = cell.learner, cell.benchmark
    path = paths.model(learner, benchmark)
    stage = train_stage(cell)
    if not path.is_file():
        raise MissingInputError(f"{path} is missing; run {stage} first")
    try:  # tensors and plain values: nothing is executed
        checkpoint = torch.load(path, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle errors, EOFError, ...
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); "
            f"re-create it: dvc repro --force {stage}"
        ) from None
    expected = dumps(cell.spec())
    found = checkpoint.get("spec") if isinstance(checkpoint, dict) else None
    if found != expected:
        if found is None:
            what = "no spec (written by an older version, or not by a train stage)"
        else:
            theirs = json.loads(found)
            what = f"the spec of {theirs.get('learner')} on {theirs.get('benchmark')}"
            if (theirs.get("learner"), theirs.get("benchmark")) == (learner, benchmark):
                what = "another spec of this cell (params changed since it was trained)"
        raise CheckpointError(
            f"{path} holds {what}, not the one {stage} trains now "
            f"({paths.train_spec(learner, benchmark)}); re-run it: dvc repro {stage}"
        )
    content = {k: v for k, v in checkpoint.items() if k != "digest"}
    if checkpoint.get("digest") != content_digest(content):
        what = "its values no longer match their digest" if "digest" in checkpoint else "no digest"
        raise CheckpointError(
            f"{path} has been changed since {stage} wrote it ({what}); restore it: "
            f"dvc checkout {path}, or re-create it: dvc repro --force {stage}"
        )
    return checkpoint
