"""Time and peak memory of one batched meta-gradient against the inner steps K: :func:`measure`
in this process, :func:`run_point` in a fresh one (whose child side, :func:`_point_main`, runs
as ``python -m metalearn.efficiency point``) within a time and a memory budget, and
:func:`sweep` over problems, variants and K.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metalearn.efficiency.problems import Problem, _pair, first_iteration, make_problem


def measure(
    problem: Problem,
    learner: str,
    steps: int,
    repeats: int = 3,
    baseline: int | None = None,
    **options: Any,
):
    """``(seconds, peak_bytes)`` of one batched meta-gradient of ``learner`` as meta-training
    starts it (:func:`~metalearn.efficiency.problems.first_iteration`): the median time of
    ``repeats`` calls after the first, and the peak memory over the first call above
    ``baseline`` (CPU: a resident size whose peak was reset when it was taken; default: now)."""
    algo, params = first_iteration(learner, problem, steps, **options)

    def call() -> None:
        algo.batched_meta_grad_and_loss(problem.loss_fn, params, *_pair(problem))

    cuda = problem.params[next(iter(problem.params))].is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _reset_peak_rss() if baseline is None else baseline
    call()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _status_bytes("VmHWM") - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], peak


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` size field (``VmRSS``, ``VmHWM``, ``VmSize``) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}: peak memory needs Linux")


def _reset_peak_rss() -> int:
    """Reset the peak resident set size to the current one (Linux >= 4.0); return it."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_bytes("VmRSS")


def run_point(
    problem: str,
    learner: str,
    steps: int,
    meta_batch: int,
    seconds: float,
    memory_cap: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """One (problem, learner, K) point in a fresh process, within ``seconds`` and (CPU) with
    ``memory_cap`` more bytes of address space than the process has after its setup; running out
    of either is a result, not an error: ``status`` is ``ok``, ``timeout`` or ``oom``."""
    spec = {
        "problem": problem,
        "learner": learner,
        "steps": steps,
        "meta_batch": meta_batch,
        "device": device,
        "options": options or {},
        "repeats": repeats,
        "memory_cap": memory_cap,
    }
    row: dict[str, Any] = {k: v for k, v in spec.items() if k not in ("options", "memory_cap")}
    row |= {"options": json.dumps(options or {}, sort_keys=True), "seconds": math.nan}
    row["peak_bytes"] = math.nan
    try:
        out = subprocess.run(
            [sys.executable, "-m", "metalearn.efficiency", "point", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=seconds,
            check=False,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired:
        return row | {"status": "timeout"}
    if out.returncode != 0:
        # CUDA, Python, CPU; oneDNN's convolution when the cap denies its workspace
        signs = (
            "out of memory",
            "MemoryError",
            "can't allocate memory",
            "could not create a primitive",
        )
        memory = any(sign in out.stderr for sign in signs)
        if memory or out.returncode < 0:  # killed by a signal: the OOM killer
            return row | {"status": "oom"}
        raise RuntimeError(f"efficiency point {spec} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return row | result | {"status": "ok"}


def _child_env() -> dict[str, str]:
    """This process's environment, with this copy of metalearn first on the path (a point must
    measure the code the stage runs, not an installed copy)."""
    src = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}


def _point_main(spec: dict[str, Any]) -> None:
    """The child side of :func:`run_point`: measure, print one JSON line."""
    torch.set_num_threads(1)  # the tests' and the pipeline's default on CPU (docs/scale.md)
    if spec["device"] == "cpu":
        # Warm up on one task at K = 1: the kernels' code pages and torch's lazy state count in
        # the resident size (~200 MB on the MLP) and would flatten every ratio to K = 1. The
        # baseline is then the process as warmed up, so a point counts its model, data and
        # workspace (memory freed by the warm-up and kept by malloc can hide up to its size).
        tiny = make_problem(spec["problem"], 1)
        algo, params = first_iteration(spec["learner"], tiny, 1, **spec["options"])
        algo.batched_meta_grad(tiny.loss_fn, params, *_pair(tiny))
        del tiny, algo, params
    baseline = _reset_peak_rss() if spec["device"] == "cpu" else None
    problem = make_problem(spec["problem"], spec["meta_batch"], device=spec["device"])
    if spec.get("memory_cap"):  # on top of what is mapped now: an oversized call fails cleanly
        cap = _status_bytes("VmSize") + int(spec["memory_cap"])
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    seconds, peak = measure(
        problem, spec["learner"], spec["steps"], spec["repeats"], baseline, **spec["options"]
    )
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def sweep(
    problems: dict[str, int],
    variants: dict[str, dict[str, Any]],
    steps: list[int],
    seconds: float,
    memory_cap: int | None = None,
    device: str = "cpu",
    repeats: int = 3,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_point` for every problem (name -> meta-batch), variant (name -> ``learner``
    and its options) and K in increasing order; after a variant runs out of time or memory at
    some K, its larger K are recorded as skipped rather than tried. ``on_row`` sees each row
    (a progress bar)."""
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for problem, meta_batch in problems.items():
        for variant, spec in variants.items():
            options = {k: v for k, v in spec.items() if k != "learner"}
            failed: str | None = None
            for k in sorted(steps):
                if failed:
                    add(
                        {"problem": problem, "variant": variant, "learner": spec["learner"],
                         "steps": k, "meta_batch": meta_batch, "status": failed,
                         "seconds": math.nan, "peak_bytes": math.nan}
                    )  # fmt: skip
                    continue
                row = run_point(
                    problem, spec["learner"], k, meta_batch, seconds, memory_cap, device,
                    options, repeats,
                )  # fmt: skip
                add({"variant": variant, **row})
                if row["status"] != "ok":
                    failed = f"skipped ({row['status']} at K={k})"
    return rows
