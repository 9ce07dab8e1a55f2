"""What the measurements say: issue 6's targets computed from the stage's rows
(:func:`targets`) and all of the stage's numbers as Markdown (:func:`summary_markdown`, the
stage's ``summary.md``, which :func:`write_summary` rebuilds from its CSVs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch

from metalearn.algorithms import REGISTRY
from metalearn.efficiency.throughput import OURS, REFERENCE


def targets(time_memory: list[dict[str, Any]], peer_rows: list[dict[str, Any]]) -> dict:
    """The stage's targets, each with the measured value and whether it holds:

    * MAML's memory growth per inner step (a least-squares slope, MiB per step) and how linear
      it is (R^2);
    * every other variant's growth as a fraction of MAML's on the same problem (target <= 0.1:
      "memory flat in K" means it grows at most a tenth as fast as backpropagation through the
      inner loop; no verdict for the other learners that backpropagate through it too:
      ``MetaLearner.unrolled``),
      beside its peak at the largest K over its K = 1 peak (for reading only: a small K = 1
      peak makes that ratio large however flat the curve);
    * Adjoint MAML's time per meta-gradient over iMAML's at equal K (target <= 2);
    * per learner and K, our throughput over the hand-written reference's (target >= 1: the
      batched path is no slower than plain ``vmap(grad)``) and over the best peer's (MAML on the
      Conv4: target >= 1.3).
    """
    out: dict[str, Any] = {}
    for problem in dict.fromkeys(r["problem"] for r in time_memory):
        rows = [r for r in time_memory if r["problem"] == problem and r["status"] == "ok"]
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(rows, key=lambda r: r["steps"]):
            by_variant.setdefault(r["variant"], []).append(r)
        entry: dict[str, Any] = {}
        maml = next((p for p in by_variant.values() if p[0]["learner"] == "maml"), [])
        maml_slope = _slope(maml) if len(maml) >= 2 else None
        for variant, points in by_variant.items():
            first, last = points[0], points[-1]
            if first["steps"] != 1 or len(points) < 2:
                continue
            if first["learner"] == "maml":
                entry[variant] = {"memory_slope_mib_per_step": maml_slope, "r2": _r2(points)}
                continue
            # a K = 1 peak of 0 (it fit in memory the warm-up freed) has no ratio (JSON null)
            base = first["peak_bytes"]
            ratio = last["peak_bytes"] / base if base > 0 else None
            slope = _slope(points)
            growth = slope / maml_slope if maml_slope else None
            unrolled = REGISTRY[first["learner"]].unrolled
            entry[variant] = {
                "memory_slope_mib_per_step": slope,
                "growth_over_maml": growth,
                "ok": None if growth is None or unrolled else growth <= 0.1,
                "memory_ratio": ratio,
                "at_steps": last["steps"],
            }
        imaml = {r["steps"]: r["seconds"] for r in rows if r["variant"] == "imaml"}
        for variant, points in by_variant.items():
            if points[0]["learner"] == "adjoint":
                shared = [r for r in points if r["steps"] in imaml]
                if shared:
                    worst = max(r["seconds"] / imaml[r["steps"]] for r in shared)
                    timing = {"time_over_imaml": worst, "time_ok": worst <= 2}
                    entry[variant] = {**entry.get(variant, {}), **timing}
        out[problem] = entry
    for (problem, learner, steps), rows in _peer_groups(peer_rows).items():
        ratio = {r["implementation"]: r["ours_over"] for r in rows}
        reference = ratio[REFERENCE]
        entry: dict[str, Any] = {"over_reference": reference, "reference_ok": reference >= 1.0}
        others = {name: v for name, v in ratio.items() if name not in (OURS, REFERENCE)}
        if others:
            best = min(others, key=others.get)  # the fastest peer: ours over it is smallest
            entry |= {"best_peer": best, "over_best_peer": others[best]}
            if problem == "omniglot_conv4" and learner == "maml":
                entry["best_peer_ok"] = others[best] >= 1.3
        out.setdefault(problem, {}).setdefault("peers", {})[f"{learner}_k{steps}"] = entry
    return out


def _peer_groups(peer_rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The peer rows by (problem, learner, K), in order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in peer_rows:
        groups.setdefault((r["problem"], r["learner"], r["steps"]), []).append(r)
    return groups


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
        lines += ["## Meta-training throughput against a reference and the peers", ""]
        lines += [
            "Steps per second (meta-gradient + Adam); ours over each (above 1: ours is faster); "
            "the float64 check's largest relative difference from ours.",
            "",
        ]
        lines += ["| problem | tasks | learner | K | implementation | steps/s | ours over | "
                  "float64 diff |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in peer_rows:
            lines.append(
                f"| {r['problem']} | {r['meta_batch']} | {r['learner']} | {r['steps']} | "
                f"{r['implementation']} | {r['steps_per_s']:.3g} | {r['ours_over']:.2f} | "
                f"{r['max_rel_diff_float64']:.1e} |"
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
