"""The protocol that ran, in the report's words: per benchmark its K, step sizes, meta-batch,
iterations, model and data (:func:`protocol_table`), where it departs from the papers'
protocols, and which keys differ from the default ``params.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from metalearn import published
from metalearn.algorithms import META_LEARNERS, REGISTRY, Fitted
from metalearn.config import (
    Config,
    benchmark_config,
    flatten,
    parse_benchmark,
)
from metalearn.config.learners import eval_steps, iterations, learner_options
from metalearn.report.families import FAMILIES
from metalearn.report.results import BASELINE, Results


def _model_words(architecture: str, cfg: Config) -> str:
    """The model a benchmark's learners ran, in a few words."""
    if architecture == "conv4":
        return f"Conv4, {cfg.model.filters} filters"
    if architecture == "ratings" and cfg.model.cf == "factors":
        head = "head adapted" if cfg.algo.adapt == "head" else "all adapted"
        return f"item factors ({cfg.model.item_dim}) + MLP {cfg.model.hidden}, {head}"
    return f"MLP {cfg.model.hidden}"


def protocol_table(cfg: Config, results: Results) -> str:
    """What ran per benchmark: K in training and at meta-test, step size, meta-batch, iterations,
    model, and the data it saw."""
    meta = [n for n in cfg.pipeline.learners if n in META_LEARNERS]  # in params.yaml's order
    lines = [
        "| benchmark | K train (" + "/".join(meta) + ") | K test "
        "| α (one, or per learner) | meta-batch | iterations | model | data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for benchmark in results:
        bcfg = benchmark_config(cfg, benchmark)
        k = "/".join(str(learner_options(bcfg, n)["steps"]) for n in meta)
        k_test = "/".join(str(eval_steps(bcfg, n)) for n in meta)
        rates = [learner_options(bcfg, n)["inner_lr"] for n in meta]
        lr = "/".join(f"{r:g}" for r in rates) if len(set(rates)) > 1 else f"{rates[0]:g}"
        first = next(iter(results[benchmark].values()))
        model = _model_words(first.get("architecture", "mlp"), bcfg)
        lines.append(
            f"| {benchmark} | {k} | {k_test} | {lr} | {bcfg.train.meta_batch} "
            f"| {_iterations_words(bcfg, cfg.pipeline.learners)} | {model} "
            f"| {_data_words(first.get('counts'))} |"
        )
    return "\n".join(lines) + "\n"


def _iterations_words(cfg: Config, learners: Sequence[str]) -> str:
    """``train.iterations``, and the learners with their own count: ``200 (maml 1500)``."""
    shared = cfg.train.iterations
    own = [
        f"{n} {iterations(cfg, n)}"
        for n in learners
        if n != BASELINE and iterations(cfg, n) != shared  # scratch trains for 0 anyway
    ]
    return f"{shared} ({', '.join(own)})" if own else str(shared)


def budget_words(cfg: Config, benchmark: str, learner: str, architecture: str = "mlp") -> str:
    """What meta-training ``learner`` got on ``benchmark``: ``300 it × 32 tasks, 3 seeds``, and
    the Conv4's width; a fitted baseline's ``closed form``."""
    kind = REGISTRY[learner]
    if issubclass(kind, Fitted):
        return "closed form"
    if not kind.meta_trained:
        return "no meta-training"
    bcfg = benchmark_config(cfg, benchmark)
    seeds = bcfg.train.seeds
    words = f"{iterations(bcfg, learner):,} it × {bcfg.train.meta_batch} tasks"
    words += f", {seeds} seed{'s' if seeds > 1 else ''}"
    if architecture == "conv4":
        words += f", {bcfg.model.filters} filters"
    return words


def _data_words(counts: dict[str, Any] | None) -> str:
    if not counts:
        return "generated"
    if "ratings" in counts:
        return f"{counts['ratings']:,} ratings, {sum(counts['users'].values()):,} users"
    if "base_classes" in counts:
        classes, images = sum(counts["base_classes"].values()), sum(counts["images"].values())
        return f"{classes:,} classes, {images:,} images"  # both per split in the episodes
    return ""


def protocol_differences(cfg: Config, results: Results) -> list[str]:
    """Every way the run differs from the papers' protocols (:mod:`metalearn.published`): for
    a benchmark whose published table has a K of its own (the CF Table 2), that table's."""
    notes = []
    for benchmark in results:
        paper = published.paper_protocol(benchmark)
        if paper is None:
            continue
        if steps := _table_steps(cfg, benchmark):
            k = steps["maml"]
            paper = dataclasses.replace(
                paper, maml_steps=k, maml_eval_steps=k, other_steps=steps["*"]
            )
        bcfg = benchmark_config(cfg, benchmark)
        maml, imaml = learner_options(bcfg, "maml"), learner_options(bcfg, "imaml")
        checks = [
            ("MAML K", maml["steps"], paper.maml_steps),
            ("MAML K at meta-test", eval_steps(bcfg, "maml"), paper.maml_eval_steps),
            ("inner step size", maml["inner_lr"], paper.inner_lr),
            ("meta-batch", bcfg.train.meta_batch, paper.meta_batch),
            ("iMAML K", imaml["steps"], paper.imaml_steps),
            ("K of the others", learner_options(bcfg, "fomaml")["steps"], paper.other_steps),
        ]
        counts = next(iter(results[benchmark].values())).get("counts")
        if paper.filters is not None:
            checks.append(("Conv4 filters", bcfg.model.filters, paper.filters))
        found = [f"{what} {ours:g} (paper {theirs:g})" for what, ours, theirs in checks if
                 theirs is not None and ours != theirs]  # fmt: skip
        dataset, _ = parse_benchmark(cfg, benchmark)
        if dataset in published.PAPER_DATA and counts:
            unit, theirs = published.PAPER_DATA[dataset]
            ours = _count(counts, unit)
            if ours is not None and ours != theirs:
                found.append(f"{ours:,} {unit} (paper {theirs:,})")
        if found:
            notes.append(f"{benchmark}: " + "; ".join(found))
    return notes


def _table_steps(cfg: Config, benchmark: str) -> dict[str, int]:
    """The K of the published table the report sets ``benchmark`` beside (empty: none)."""
    for family in FAMILIES:
        if benchmark in family.columns:
            return next((t.steps for t in family.published(cfg) if t.steps), {})
    return {}


def _protocol_leaves(cfg: Config, benchmark: str) -> dict[str, Any]:
    """The keys a benchmark's stages read, flattened: algo, model, train, eval, the dataset's
    shared keys and its own setting."""
    bcfg = benchmark_config(cfg, benchmark)
    dataset, setting = parse_benchmark(cfg, benchmark)
    data = dataclasses.asdict(getattr(bcfg.data, dataset))
    data["settings"] = {setting: data["settings"][setting]}
    tree = {s: dataclasses.asdict(getattr(bcfg, s)) for s in ("algo", "model", "train", "eval")}
    tree["algo"] |= tree["algo"].pop("learners")  # algo.<learner>, as params.yaml writes it
    leaves = flatten({**tree, "data": {dataset: data}})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in leaves.items()}  # as in YAML


def changes_from_default(cfg: Config, default: Config, results: Results) -> list[str]:
    """Every key whose value differs from the default protocol, with the benchmarks it applies
    to (all of them: "every benchmark")."""
    changed: dict[tuple[str, str, str], list[str]] = {}
    for benchmark in results:
        if benchmark not in default.pipeline.benchmarks:
            continue
        ours, theirs = _protocol_leaves(cfg, benchmark), _protocol_leaves(default, benchmark)
        for key, value in ours.items():
            if value != theirs.get(key):
                changed.setdefault((key, repr(value), repr(theirs.get(key))), []).append(benchmark)
    lines = []
    for (key, value, was), benchmarks in changed.items():
        where = "every benchmark" if len(benchmarks) == len(results) else ", ".join(benchmarks)
        show = lambda text: text.replace("None", "null").strip("'")  # noqa: E731
        lines.append(f"`{key}` = {show(value)} (default {show(was)}): {where}")
    return lines


def _count(counts: dict[str, Any], unit: str) -> int | None:
    if unit == "characters":
        return sum(counts["base_classes"].values())
    if unit == "users":
        return sum(counts["users"].values())
    return counts.get(unit)
