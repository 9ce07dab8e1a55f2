"""Efficiency of the meta-gradients (issue 6): time and peak memory of one batched meta-gradient
against the inner steps K, its accuracy against exact MAML, and throughput against ``higher``.

The problems have the shapes of two benchmarks, with seeded random data (time and memory do
not depend on the values, and accuracy is relative to MAML on the same data):

* ``cf_mlp``: the collaborative-filtering MLP (100 item features -> 40 -> 40 -> 1, tanh, MSE),
  10 support and 15 query ratings per task (MovieLens 10shot-15val);
* ``omniglot_conv4``: Conv4 (64 filters, 28 x 28, 5 classes, cross-entropy) on 5-way 1-shot
  tasks with one query image per class, as in the MAML protocol's meta-training.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the call;
on CPU each point runs in a fresh process (:func:`run_point`): the kernel's peak resident set
size of that process (``VmHWM``, reset through ``/proc/self/clear_refs`` once torch is loaded)
over building the problem and its first meta-gradient, minus the resident size at that reset:
the model, the data and everything the call allocates, without the interpreter and torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import Tensor, nn

from metalearn.algorithms import make
from metalearn.config import EFFICIENCY_PROBLEMS, ConfigError, EfficiencyConfig, resolve_device
from metalearn.functional import LossFn, Params
from metalearn.io import atomic_dir, write_json
from metalearn.models import MLP, Conv4, init_params, make_loss

PROBLEMS = EFFICIENCY_PROBLEMS


@dataclass
class Problem:
    model: nn.Module
    loss_fn: LossFn
    params: Params
    support: tuple[Tensor, Tensor]  # leading task dimension
    query: tuple[Tensor, Tensor]


def make_problem(
    name: str,
    meta_batch: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Problem:
    """A meta-batch of ``meta_batch`` tasks of problem ``name`` (one of :data:`PROBLEMS`)."""
    g = torch.Generator().manual_seed(seed)
    if name == "cf_mlp":
        model: nn.Module = MLP(in_dim=100, out_dim=1, hidden=(40, 40), activation="tanh")
        kind = "mse"

        def batch(n: int) -> tuple[Tensor, Tensor]:
            x = torch.randn(meta_batch, n, 100, generator=g) / 10  # embedding-sized features
            return x, torch.rand(meta_batch, n, generator=g)  # ratings scaled to [0, 1]

        support, query = batch(10), batch(15)
    elif name == "omniglot_conv4":
        model = Conv4(in_channels=1, n_classes=5, filters=64, image_size=28)
        kind = "cross_entropy"

        def batch(n: int) -> tuple[Tensor, Tensor]:
            x = torch.rand(meta_batch, 5 * n, 1, 28, 28, generator=g)
            y = torch.arange(5).repeat(n).expand(meta_batch, -1).contiguous()
            return x, y

        support, query = batch(1), batch(1)
    else:
        raise ValueError(f"unknown problem {name!r} (valid: {', '.join(PROBLEMS)})")

    def to(t: Tensor) -> Tensor:
        return t.to(device, dtype if t.is_floating_point() else t.dtype)

    params = {k: to(v) for k, v in init_params(model, g).items()}
    model.to(device, dtype)
    support, query = tuple(map(to, support)), tuple(map(to, query))
    return Problem(model, make_loss(model, kind), params, support, query)


# --------------------------------------------------------------------------- time and memory


def measure(
    problem: Problem,
    learner: str,
    steps: int,
    repeats: int = 3,
    baseline: int | None = None,
    **options: Any,
):
    """``(seconds, peak_bytes)`` of one batched meta-gradient: the median time of ``repeats``
    calls after the first, and the peak memory over the first call above ``baseline`` (CPU: a
    resident size whose peak was reset when it was taken; default: now)."""
    algo = make(learner, steps=steps, inner_lr=0.01, **options)

    def call() -> None:
        algo.batched_meta_grad_and_loss(problem.loss_fn, problem.params, *_pair(problem))

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


def _pair(problem: Problem) -> tuple[Any, Any]:
    return problem.support, problem.query


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
    src = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}


def _point_main(spec: dict[str, Any]) -> None:
    """The child side of :func:`run_point`: measure, print one JSON line."""
    torch.set_num_threads(1)  # the tests' and the pipeline's default on CPU (README)
    if spec["device"] == "cpu":
        # Warm up on one task at K = 1: the kernels' code pages and torch's lazy state count in
        # the resident size (~200 MB on the MLP) and would flatten every ratio to K = 1. The
        # baseline is then the process as warmed up, so a point counts its model, data and
        # workspace (memory freed by the warm-up and kept by malloc can hide up to its size).
        tiny = make_problem(spec["problem"], 1)
        make(spec["learner"], steps=1, inner_lr=0.01, **spec["options"]).batched_meta_grad(
            tiny.loss_fn, tiny.params, *_pair(tiny)
        )
        del tiny
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


def plot_time_memory(rows: list[dict[str, Any]], path: Any) -> None:
    """The Adjoint MAML paper's two panels (time and memory against K), one row per problem;
    a variant's line ends where it ran out of time or memory (marked x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(len(problems), 2, figsize=(10, 3.6 * len(problems)), squeeze=False)
    for (ax_time, ax_mem), problem in zip(axes, problems, strict=True):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["problem"] == problem):
            points = [r for r in rows if (r["problem"], r["variant"]) == (problem, variant)]
            ok = [r for r in points if r["status"] == "ok"]
            ks = [r["steps"] for r in ok]
            (line,) = ax_time.plot(ks, [r["seconds"] for r in ok], marker="o", label=variant)
            ax_mem.plot(
                ks, [r["peak_bytes"] / 2**20 for r in ok], marker="o", color=line.get_color()
            )
            first_fail = next((r for r in points if r["status"] in ("oom", "timeout")), None)
            if first_fail and ok:
                ax_time.plot(
                    [first_fail["steps"]], [ok[-1]["seconds"]], "x", color=line.get_color()
                )
        if not any(r["problem"] == problem and r["status"] == "ok" for r in rows):
            ax_time.text(0.5, 0.5, "no point within its budget", ha="center",
                         transform=ax_time.transAxes)  # fmt: skip
        else:
            ax_time.set_yscale("log")
        for ax, label in ((ax_time, "seconds per meta-gradient"), (ax_mem, "peak memory (MiB)")):
            ax.set_xscale("log")
            ax.set_xlabel("inner steps K")
            ax.set_ylabel(label)
            ax.set_title(problem)
        ax_time.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------- accuracy


def accuracy(problem: Problem, steps: int, variants: dict[str, dict[str, Any]]) -> dict:
    """Relative error and cosine similarity of each variant's mean meta-gradient against MAML's
    (the exact gradient of the K-step loop) on the same meta-batch: ``{variant: (err, cos)}``."""
    exact = make("maml", steps=steps, inner_lr=0.01).batched_meta_grad(
        problem.loss_fn, problem.params, *_pair(problem)
    )
    ref = _flat(exact)
    out = {}
    for name, spec in variants.items():
        options = dict(spec)
        learner = options.pop("learner")
        grads = make(learner, steps=steps, inner_lr=0.01, **options).batched_meta_grad(
            problem.loss_fn, problem.params, *_pair(problem)
        )
        vec = _flat(grads)
        err = float((vec - ref).norm() / ref.norm())
        cos = float(vec @ ref / (vec.norm() * ref.norm()).clamp_min(1e-300))
        out[name] = (err, cos)
    return out


def accuracy_sweep(
    problems: dict[str, int],
    steps: list[int],
    variants: dict[str, dict[str, Any]],
    dtype: torch.dtype = torch.float64,
) -> list[dict[str, Any]]:
    """:func:`accuracy` for every problem (name -> meta-batch) and K, in ``dtype`` (float64: the
    errors are the methods', not round-off). Where exact MAML does not fit in memory the row's
    error is NaN with ``status`` ``maml out of memory``."""
    rows = []
    for problem_name, meta_batch in problems.items():
        problem = make_problem(problem_name, meta_batch, dtype=dtype)
        for k in steps:
            try:
                found = accuracy(problem, k, variants)
                status = "ok"
            except (MemoryError, RuntimeError) as error:
                if not isinstance(error, MemoryError) and "allocate" not in str(error):
                    raise
                found, status = {v: (math.nan, math.nan) for v in variants}, "maml out of memory"
            for variant, (err, cos) in found.items():
                rows.append(
                    {"problem": problem_name, "steps": k, "variant": variant,
                     "rel_err": err, "cosine": cos, "status": status}
                )  # fmt: skip
    return rows


def plot_accuracy(rows: list[dict[str, Any]], path: Any) -> None:
    """Relative error of each variant's meta-gradient against MAML's, against K (as the iMAML
    paper's Figure 2a), one panel per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(5.5 * len(problems), 3.8), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["problem"] == problem):
            points = [r for r in rows if (r["problem"], r["variant"]) == (problem, variant)]
            points = [r for r in points if r["status"] == "ok"]
            errs = [max(r["rel_err"], 1e-16) for r in points]  # exact variants sit on the floor
            ax.plot([r["steps"] for r in points], errs, marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("inner steps K")
        ax.set_ylabel("relative error vs exact MAML")
        ax.set_title(problem)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _flat(grads: Params) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads.values()])


# ---------------------------------------------------------------------------------------- peers


def higher_maml_grad(problem: Problem, steps: int, inner_lr: float) -> Params:
    """MAML's mean meta-gradient computed with ``higher`` (one task at a time, as it works):
    the peer reference. Needs the optional ``higher`` package."""
    import higher

    model = problem.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(problem.params[name])
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=inner_lr)
    n = problem.support[0].shape[0]
    for i in range(n):
        support = tuple(t[i] for t in problem.support)
        query = tuple(t[i] for t in problem.query)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(_module_loss(problem, fmodel, support))
            (_module_loss(problem, fmodel, query) / n).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _module_loss(problem: Problem, module: Callable, batch: tuple[Tensor, Tensor]) -> Tensor:
    """The problem's loss through a module call (``higher``'s functional model)."""
    x, y = batch
    out = module(x)
    if y.is_floating_point():
        return (out.squeeze(-1) - y).square().mean()
    return nn.functional.cross_entropy(out, y)


def steps_per_second(
    step: Callable[[], Any], seconds: float = 5.0, least: int = 2, warm_up: bool = True
) -> float:
    """Meta-training steps per second of ``step`` (after one warm-up call unless ``warm_up`` is
    false), over about ``seconds`` of wall time and at least ``least`` calls."""
    if warm_up:
        step()
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - start)


def max_rel_diff(a: Params, b: Params) -> float:
    """``max_k max|a_k - b_k| / max_k max|b_k|``: one scale for all tensors."""
    scale = max(float(v.abs().max()) for v in b.values()) or 1e-30
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def _training_step(form: Callable[[], Params], theta: Params) -> Callable[[], None]:
    """One meta-training step: the meta-gradient ``form()`` and an Adam update of a copy of
    ``theta`` (the update's cost counts; the meta-gradient is always taken at ``theta``)."""
    params = {k: nn.Parameter(v.clone()) for k, v in theta.items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)

    def step() -> None:
        for k, g in form().items():
            params[k].grad = g
        optimizer.step()

    return step


def maml_forms(problem: Problem, steps: int, inner_lr: float) -> dict[str, Callable[[], Params]]:
    """MAML's mean meta-gradient on ``problem`` three ways: our batched path, our per-task loop
    and ``higher`` (when installed: ``pip install -e '.[bench]'``)."""
    learner = make("maml", steps=steps, inner_lr=inner_lr)
    pair = _pair(problem)
    forms: dict[str, Callable[[], Params]] = {
        "ours, batched (vmap)": lambda: learner.batched_meta_grad_and_loss(
            problem.loss_fn, problem.params, *pair
        )[0],
        "ours, per-task loop": lambda: learner.looped_meta_grad_and_loss(
            problem.loss_fn, problem.params, *pair
        )[0],
    }
    try:
        import higher  # noqa: F401 - optional

        forms["higher"] = lambda: higher_maml_grad(problem, steps, inner_lr)
    except ImportError:
        pass
    return forms


def peers(
    problem_name: str,
    meta_batch: int,
    steps: int,
    inner_lr: float = 0.01,
    seconds: float = 5.0,
    device: str = "cpu",
    tolerance: float = 1e-10,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Meta-training steps per second (meta-gradient + an Adam step) of MAML as our batched
    path, our per-task loop and ``higher``, on identical model, tasks and float32 numerics.
    First checks, in float64 on the same tasks, that the meta-gradients agree to ``tolerance``
    (raises otherwise): float32 round-off through batch norm over 5 images reaches 1e-3 and
    would hide a real difference.

    Each implementation is timed for ``seconds`` in all, in ``rounds`` interleaved rounds, and
    its best round counts: a burst of load from other processes slows one round of each
    implementation alike instead of one implementation's whole measurement."""
    exact = {
        name: form()
        for name, form in maml_forms(
            make_problem(problem_name, meta_batch, dtype=torch.float64), steps, inner_lr
        ).items()
    }
    reference = exact["ours, per-task loop"]
    diffs = {name: max_rel_diff(grads, reference) for name, grads in exact.items()}
    for name, diff in diffs.items():
        if not diff < tolerance:
            raise RuntimeError(f"{name}: meta-gradient differs from the loop's by {diff:.2e}")
    problem = make_problem(problem_name, meta_batch, device=device)
    training_steps = {
        name: _training_step(form, problem.params)
        for name, form in maml_forms(problem, steps, inner_lr).items()
    }
    for step in training_steps.values():
        step()  # warm-up
    rate = dict.fromkeys(training_steps, 0.0)
    for _ in range(rounds):
        for name, step in training_steps.items():
            measured = steps_per_second(step, seconds / rounds, least=1, warm_up=False)
            rate[name] = max(rate[name], measured)
    return [
        {
            "problem": problem_name,
            "implementation": name,
            "meta_batch": meta_batch,
            "steps": steps,
            "steps_per_s": rate[name],
            "max_rel_diff_float64": diffs[name],
        }
        for name in training_steps
    ]


# -------------------------------------------------------------------------------------- targets


def targets(time_memory: list[dict[str, Any]], peer_rows: list[dict[str, Any]]) -> dict:
    """Issue 6's targets, each with the measured value and whether it holds:

    * each Adjoint MAML variant's peak memory at its largest measured K over its K = 1 value
      (target <= 1.25), and the same ratio for iMAML, FOMAML and Reptile (flat);
    * MAML's memory growth per inner step (a least-squares slope) and how linear it is (R^2);
    * Adjoint MAML's time per meta-gradient over iMAML's at equal K (target <= 2);
    * our batched throughput over ``higher``'s (target >= 3 on the MLP, >= 1.3 on the Conv4).
    """
    out: dict[str, Any] = {}
    for problem in dict.fromkeys(r["problem"] for r in time_memory):
        rows = [r for r in time_memory if r["problem"] == problem and r["status"] == "ok"]
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(rows, key=lambda r: r["steps"]):
            by_variant.setdefault(r["variant"], []).append(r)
        entry: dict[str, Any] = {}
        for variant, points in by_variant.items():
            first, last = points[0], points[-1]
            if first["steps"] != 1 or len(points) < 2:
                continue
            # a K = 1 peak of 0 (it fit in memory the warm-up freed) has no ratio (JSON null)
            base = first["peak_bytes"]
            ratio = last["peak_bytes"] / base if base > 0 else None
            learner = first["learner"]
            if learner == "maml":
                entry[variant] = {"memory_slope_mib_per_step": _slope(points), "r2": _r2(points)}
            else:
                limit = 1.25 if learner in ("adjoint", "imaml", "fomaml", "reptile") else None
                ok = None if limit is None or ratio is None else ratio <= limit
                entry[variant] = {"memory_ratio": ratio, "at_steps": last["steps"], "ok": ok}
        imaml = {r["steps"]: r["seconds"] for r in rows if r["variant"] == "imaml"}
        for variant, points in by_variant.items():
            if points[0]["learner"] == "adjoint":
                shared = [r for r in points if r["steps"] in imaml]
                if shared:
                    worst = max(r["seconds"] / imaml[r["steps"]] for r in shared)
                    timing = {"time_over_imaml": worst, "time_ok": worst <= 2}
                    entry[variant] = {**entry.get(variant, {}), **timing}
        out[problem] = entry
    for problem in dict.fromkeys(r["problem"] for r in peer_rows):
        rate = {r["implementation"]: r["steps_per_s"] for r in peer_rows if r["problem"] == problem}
        if "higher" in rate:
            need = 3.0 if problem == "cf_mlp" else 1.3
            speedup = rate["ours, batched (vmap)"] / rate["higher"]
            out.setdefault(problem, {})["batched_over_higher"] = {
                "speedup": speedup,
                "target": need,
                "ok": speedup >= need,
            }
    return out


def _slope(points: list[dict[str, Any]]) -> float:
    """Least-squares MiB per inner step of peak memory against K."""
    k = torch.tensor([float(r["steps"]) for r in points])
    m = torch.tensor([r["peak_bytes"] / 2**20 for r in points])
    kc = k - k.mean()
    return float((kc * (m - m.mean())).sum() / kc.square().sum())


def _r2(points: list[dict[str, Any]]) -> float:
    k = torch.tensor([float(r["steps"]) for r in points])
    m = torch.tensor([r["peak_bytes"] / 2**20 for r in points])
    fit = m.mean() + _slope(points) * (k - k.mean())
    total = (m - m.mean()).square().sum()
    return float(1 - (m - fit).square().sum() / total) if total > 0 else 1.0


# -------------------------------------------------------------------------------------- summary


def _mib(nbytes: float) -> str:
    mib = nbytes / 2**20
    return f"{mib:.0f}" if mib >= 10 else f"{mib:.1f}"


def _variant_table(
    title: str, rows: list[dict[str, Any]], cell: Callable[[dict[str, Any]], str]
) -> list[str]:
    """A Markdown table of one problem's ``rows``: variants down, K across, ``cell(row)`` in."""
    ks = sorted({r["steps"] for r in rows})
    lines = [f"## {title}", "", "| variant | " + " | ".join(f"K={k}" for k in ks) + " |"]
    lines += ["|---|" + "---|" * len(ks)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        by_k = {r["steps"]: r for r in rows if r["variant"] == variant}
        lines.append(f"| {variant} | " + " | ".join(cell(by_k[k]) for k in ks) + " |")
    return [*lines, ""]


def _time_memory_cell(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return r["status"].split(" (")[0]  # "skipped (oom at K=...)" -> "skipped"
    return f"{r['seconds']:.3g} / {_mib(r['peak_bytes'])}"


def _accuracy_cell(r: dict[str, Any]) -> str:
    return f"{r['rel_err']:.2g} ({r['cosine']:.4f})" if r["status"] == "ok" else r["status"]


def summary_markdown(
    time_memory: list[dict[str, Any]],
    grad_accuracy: list[dict[str, Any]],
    peer_rows: list[dict[str, Any]],
    found: dict[str, Any],
) -> str:
    """The stage's numbers as Markdown: time / peak memory per variant and K, relative error
    (cosine) against MAML per variant and K, throughput against ``higher``, and the targets."""
    lines = ["# Efficiency", ""]
    for problem in dict.fromkeys(r["problem"] for r in time_memory):
        rows = [r for r in time_memory if r["problem"] == problem]
        title = (
            f"{problem}: seconds / peak MiB of one meta-gradient ({rows[0]['meta_batch']} tasks)"
        )
        lines += _variant_table(title, rows, _time_memory_cell)
    for problem in dict.fromkeys(r["problem"] for r in grad_accuracy):
        rows = [r for r in grad_accuracy if r["problem"] == problem]
        title = f"{problem}: relative error (cosine) against exact MAML, float64"
        lines += _variant_table(title, rows, _accuracy_cell)
    if peer_rows:
        lines += ["## MAML meta-training throughput against `higher`", ""]
        lines += ["| problem | tasks | K | implementation | steps/s | × higher | float64 diff |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for r in peer_rows:
            rate = {q["implementation"]: q["steps_per_s"] for q in peer_rows
                    if q["problem"] == r["problem"]}  # fmt: skip
            ratio = f"{r['steps_per_s'] / rate['higher']:.2f}" if "higher" in rate else "–"
            lines.append(
                f"| {r['problem']} | {r['meta_batch']} | {r['steps']} | {r['implementation']} "
                f"| {r['steps_per_s']:.3g} | {ratio} | {r['max_rel_diff_float64']:.1e} |"
            )
        lines.append("")
    lines += ["## Targets", "", "```json", json.dumps(found, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def write_summary(out: Path) -> Path:
    """Rebuild ``out/summary.md`` from the stage's CSVs and targets in ``out``."""
    tables = [
        pl.read_csv(out / f"{name}.csv").to_dicts() for name in ("time_memory", "accuracy", "peers")
    ]
    found = json.loads((out / "targets.json").read_text())
    path = out / "summary.md"
    path.write_text(summary_markdown(*tables, found))
    return path


# ---------------------------------------------------------------------------------------- stage


def variant_specs(cfg: EfficiencyConfig) -> dict[str, dict[str, Any]]:
    """``efficiency.variants`` as ``{name: {"learner": ..., **options}}``, each checked by
    building its learner, so a bad option fails before any measurement."""
    specs = {}
    for name, variant in cfg.variants.items():
        try:
            make(variant.learner, steps=1, inner_lr=0.01, **variant.options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"efficiency.variants.{name}: {error}") from None
        specs[name] = {"learner": variant.learner, **variant.options}
    return specs


def run_stage(cfg: EfficiencyConfig, out: Path) -> dict[str, Any]:
    """The efficiency stage: the K sweep (a fresh process per point), the accuracy sweep against
    MAML (float64), the peer throughput; writes the CSVs and plots into ``out`` (all or nothing)
    and returns the targets (:func:`targets`). One thread on CPU, so the implementations compare
    per core and the points do not depend on what else the machine runs on its other cores."""
    from tqdm import tqdm

    specs = variant_specs(cfg)
    device = str(resolve_device(cfg))
    torch.set_num_threads(1)
    cap = None if device == "cuda" else int(cfg.memory_gib * 2**30)
    total = len(cfg.meta_batch) * len(specs) * len(cfg.steps)
    with tqdm(total=total, desc="efficiency: time/memory", disable=not sys.stderr.isatty()) as bar:
        time_memory = sweep(
            cfg.meta_batch, specs, cfg.steps, cfg.seconds, cap, device, cfg.repeats,
            on_row=lambda row: bar.update(),
        )  # fmt: skip
    others = {k: v for k, v in specs.items() if v["learner"] != "maml"}
    problems = {p: cfg.accuracy_meta_batch for p in cfg.meta_batch}
    grad_accuracy = accuracy_sweep(problems, cfg.accuracy_steps, others)
    peer_rows = [
        row
        for problem, peer in cfg.peers.items()
        for row in peers(problem, peer.meta_batch, peer.steps, seconds=cfg.peer_seconds,
                         device=device)
    ]  # fmt: skip
    found = targets(time_memory, peer_rows)
    with atomic_dir(out) as tmp:
        for name, rows in (("time_memory", time_memory), ("accuracy", grad_accuracy),
                           ("peers", peer_rows)):  # fmt: skip
            pl.DataFrame(rows).write_csv(tmp / f"{name}.csv")
        plot_time_memory(time_memory, tmp / "time_memory.png")
        plot_accuracy(grad_accuracy, tmp / "accuracy.png")
        write_json(tmp / "targets.json", found)
        (tmp / "summary.md").write_text(
            summary_markdown(time_memory, grad_accuracy, peer_rows, found)
        )
    return {"device": device, "points": len(time_memory), "targets": found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["point", "summary"])
    parser.add_argument(
        "arg", help="point: JSON spec (problem, learner, steps, ...); summary: the stage's folder"
    )
    args = parser.parse_args(argv)
    if args.command == "summary":
        print(f"wrote {write_summary(Path(args.arg))}")
    else:
        _point_main(json.loads(args.arg))
    return 0


__all__ = [
    "PROBLEMS",
    "Problem",
    "accuracy",
    "accuracy_sweep",
    "higher_maml_grad",
    "make_problem",
    "max_rel_diff",
    "measure",
    "peers",
    "run_point",
    "plot_time_memory",
    "run_stage",
    "steps_per_second",
    "summary_markdown",
    "sweep",
    "targets",
    "variant_specs",
    "write_summary",
]

if __name__ == "__main__":
    raise SystemExit(main())
