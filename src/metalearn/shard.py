"""A data-parallel rank's share of a meta-batch and the all-reduce that averages the shares
(``train.processes``; :mod:`metalearn.distributed` launches the ranks)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist

from metalearn.functional import Params


@dataclasses.dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world``: which tasks of a meta-batch it takes, and the all-reduce
    that turns its mean meta-gradient into the whole batch's."""

    rank: int
    world: int

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's tasks ``[start, stop)`` of ``n`` (sizes differ by at most one)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def take(self, tree: Any, n: int) -> Any:
        """This rank's tasks of every tensor in ``tree`` (the task dimension first)."""
        start, stop = self.bounds(n)
        return torch.utils._pytree.tree_map(lambda t: t[start:stop], tree)

    def average(self, grads: Params, loss: torch.Tensor, n: int) -> tuple[Params, torch.Tensor]:
        """The meta-batch's mean from each rank's mean over its share: one all-reduce of the
        shares' means weighted by their task counts."""
        start, stop = self.bounds(n)
        weight = (stop - start) / n
        keys = list(grads)
        flat = torch.cat([grads[k].reshape(-1) for k in keys] + [loss.reshape(1)]) * weight
        dist.all_reduce(flat)
        out, offset = {}, 0
        for k in keys:
            size = grads[k].numel()
            out[k] = flat[offset : offset + size].view_as(grads[k])
            offset += size
        return out, flat[-1]
