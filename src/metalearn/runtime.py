"""Where a cell runs: its torch device and thread count. Below the training loop and its fan-out
(workers, ranks), which all call it."""

from __future__ import annotations

import logging
from typing import Any

import torch

# torch.compile on a machine without CUDA logs "No CUDA runtime is found, using CUDA_HOME=..."
# once per stage: true, and nothing to act on, on a CPU
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def resolve_device(setting: Any) -> torch.device:
    """``setting.device`` as a torch device: ``auto`` is CUDA when a GPU is visible, else CPU."""
    if setting.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting.device)


def torch_runtime(cell: Any) -> torch.device:
    """Apply a cell's ``threads`` (0 keeps torch's default) and return its ``device`` to run on
    (``cell``: a :class:`metalearn.cell.TrainCell`, or anything with those two fields)."""
    if cell.threads:
        torch.set_num_threads(cell.threads)
    return resolve_device(cell)
