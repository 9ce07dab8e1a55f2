"""Every paired number of the committed report, recomputed from the committed per-task scores:
``python -m metalearn.report check`` in a fresh clone, without DVC's cache or any re-training.

The evaluate and train stages' small outputs (per-task scores, curves and their bookkeeping)
are committed with the report (``cache: false`` in dvc.yaml), so a clone holds what
``summary.json``'s paired comparisons and claims were computed from; :func:`recheck` checks
those files against the digests their stages recorded and recomputes both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metalearn import paths
from metalearn.config import Config
from metalearn.errors import DataError
from metalearn.io import read_json
from metalearn.report.claims import judge
from metalearn.report.results import ALL_USERS, all_users, collect, read_scores, verify_inputs

#: Relative tolerance between the recomputed and committed numbers (another BLAS, another
#: libm may move the last bits of a p-value).
RTOL = 1e-9


def recheck(cfg: Config, root: Path = Path()) -> str:
    """Recompute ``summary.json``'s paired comparisons and claims from the per-task files under
    ``root``; one line saying how many numbers agree, or a :class:`DataError` naming the first
    that does not."""
    summary_path = root / paths.SUMMARY_JSON
    summary = read_json(summary_path)
    results = collect(cfg, root)
    verify_inputs(cfg, results, root)
    scores = read_scores(results, root)
    if not scores:
        raise DataError(
            f"{root / 'results/eval'} holds no per-task scores of {', '.join(results)}: the "
            "report was made before they were committed; re-create them: dvc repro"
        )
    checked, benchmarks = 0, len(scores)
    for benchmark, parts in judge(cfg, results, scores).json().items():
        committed = {
            "paired": summary.get(benchmark, {}).get("paired"),
            "claims": summary.get("claims", {}).get(benchmark),
        }
        for part, value in parts.items():
            checked += _compare(value, committed[part], f"{benchmark}.{part}", summary_path)
    everyone = all_users(results)
    everyone_scores = read_scores(everyone, root, paths.eval_per_task_all_users)
    for benchmark, parts in judge(cfg, everyone, everyone_scores).json().items():
        committed = summary.get(benchmark, {}).get(ALL_USERS, {})
        for part, value in parts.items():
            where = f"{benchmark}.{ALL_USERS}.{part}"
            checked += _compare(value, committed.get(part), where, summary_path)
    return (
        f"{summary_path}: {checked} numbers of {benchmarks} benchmarks' paired comparisons "
        f"and claims ({len(everyone_scores)} also on every eligible meta-test user) recomputed "
        f"from {root / 'results/eval'}: all agree"
    )


def _compare(ours: Any, committed: Any, where: str, path: Path) -> int:
    """How many numbers ``ours`` and ``committed`` hold, all equal; else a DataError at the
    first difference (``where`` is its key path)."""
    if isinstance(ours, dict) and isinstance(committed, dict) and ours.keys() == committed.keys():
        return sum(_compare(v, committed[k], f"{where}.{k}", path) for k, v in ours.items())
    if isinstance(ours, list) and isinstance(committed, list) and len(ours) == len(committed):
        pairs = enumerate(zip(ours, committed, strict=True))
        return sum(_compare(a, b, f"{where}[{i}]", path) for i, (a, b) in pairs)
    if _number(ours) and _number(committed):
        both_nan = math.isnan(ours) and math.isnan(committed)
        if both_nan or math.isclose(ours, committed, rel_tol=RTOL):
            return 1
    elif ours == committed:
        return 0
    raise DataError(
        f"{path}: {where} is {_short(committed)}, but the committed per-task scores give "
        f"{_short(ours)}: the report and results/eval disagree; re-create the report: "
        "dvc repro -f report"
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
