"""The report stage: every evaluation in one metrics file, paper-style tables and plots.

``results/summary.md`` holds one table per family (learners as rows) in the layout of the paper
it reproduces, the published numbers for the same cells under it, the protocol that ran, every
difference from the papers' protocols and the sanity checks; ``results/summary.json`` the same
numbers for ``dvc exp show``; ``results/plots/`` a bar chart and the meta-validation curves per
benchmark (also logged to that benchmark's MLflow runs).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from metalearn import paths, published  # noqa: E402
from metalearn.config import (  # noqa: E402
    Config,
    benchmark_config,
    eval_steps,
    flatten,
    iterations,
    learner_options,
    parse_benchmark,
)
from metalearn.io import atomic_dir, atomic_file, read_json, write_json  # noqa: E402

Results = dict[str, dict[str, dict[str, Any]]]  # benchmark -> learner -> eval metrics

META_LEARNERS = ("maml", "fomaml", "reptile", "imaml", "adjoint")
BASELINE = "scratch"  # every meta-learner must beat it
PARAMS_NAME = "params.yaml"
OMNIGLOT_TARGET = ("omniglot-way5shot1", "maml", 0.95)  # issue 5: MAML >= 95 % on 5-way 1-shot

# A published row -> our learner of the same name.
PAPER_ROWS = {
    "A-MAML": "adjoint",
    "iMAML": "imaml",
    "MAML": "maml",
    "FOMAML": "fomaml",
    "Reptile": "reptile",
    "first-order MAML": "fomaml",
    "iMAML, GD": "imaml",
    "iMAML, Hessian-Free": "imaml",
}


@dataclass(frozen=True)
class Family:
    """Benchmarks reported in one table, in the column order of the paper's table."""

    title: str
    columns: tuple[str, ...]  # benchmark names
    headers: tuple[str, ...]  # their column titles
    percent: bool  # accuracy shown in %
    published: Callable[[Config], list[published.PublishedTable]]


def _cf_tables(cfg: Config) -> list[published.PublishedTable]:
    """Table 2 when the run used its K (100, MAML 10), else Table 1."""
    table2 = published.CF_TABLE_2
    cf = [b for b in published.CF if b in cfg.pipeline.benchmarks]
    if cf and _steps_match(benchmark_config(cfg, cf[0]), table2.steps):
        return [table2]
    return [published.CF_TABLE_1]


def _steps_match(cfg: Config, steps: dict[str, int]) -> bool:
    return all(
        learner_options(cfg, name)["steps"] == steps.get(name, steps["*"]) for name in META_LEARNERS
    )


FAMILIES = (
    Family(
        "Collaborative filtering: meta-test nRMSE (lower is better)",
        published.CF,
        tuple(
            f"{d} {s}"
            for d in ("Jester-1", "MovieLens100K", "MovieLens1M")
            for s in ("10shot-15val", "20shot-30val")
        ),
        percent=False,
        published=_cf_tables,
    ),
    Family(
        "Few-shot classification: meta-test accuracy in % (higher is better)",
        (*published.OMNIGLOT, "miniimagenet-way5shot1", "miniimagenet-way5shot5"),
        (
            "Omniglot 5-way 1-shot",
            "Omniglot 5-way 5-shot",
            "Omniglot 20-way 1-shot",
            "Omniglot 20-way 5-shot",
            "MiniImageNet 5-way 1-shot",
            "MiniImageNet 5-way 5-shot",
        ),
        percent=True,
        published=lambda cfg: [published.OMNIGLOT_TABLE, published.MINIIMAGENET_TABLE],
    ),
    Family(
        "Synthetic regression: meta-test nRMSE (lower is better)",
        ("cosmixture-shot50", "cosmixture-shot100", "alpine-shot50", "alpine-shot100"),
        (
            "CosMixture 50shot-50val",
            "CosMixture 100shot-100val",
            "Alpine 50shot-50val",
            "Alpine 100shot-100val",
        ),
        percent=False,
        published=lambda cfg: [],
    ),
)


def collect(cfg: Config, root: Path = Path()) -> Results:
    """``{benchmark: {learner: eval metrics}}`` for the pipeline's learners and benchmarks."""
    results = {}
    for benchmark in cfg.pipeline.benchmarks:
        path = root / paths.eval_metrics(benchmark)
        found = read_json(path)
        missing = [lr for lr in cfg.pipeline.learners if lr not in found]
        if missing:
            raise FileNotFoundError(
                f"{path} has no evaluation of {', '.join(missing)}; run evaluate@{benchmark}"
            )
        results[benchmark] = {lr: found[lr] for lr in cfg.pipeline.learners}
    return results


def summary_metrics(results: Results) -> dict[str, Any]:
    """The compact metrics file for ``dvc exp show``: ``{benchmark: {learner: {mean, ci}}}``."""
    return {
        benchmark: {
            learner: {r["metric"]: r["mean"], "ci": r["ci"]} for learner, r in by_learner.items()
        }
        for benchmark, by_learner in results.items()
    }


# ------------------------------------------------------------------------------------- checks


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["mean"] > b["mean"] if a["higher_is_better"] else a["mean"] < b["mean"]


def sanity_checks(results: Results) -> dict[str, Any]:
    """Issue 5's sanity rules: each meta-learner beats ``scratch`` on each benchmark (the cells
    that do not are listed), and MAML reaches 95 % on Omniglot 5-way 1-shot."""
    not_beating = [
        f"{learner}-{benchmark}"
        for benchmark, by_learner in results.items()
        if BASELINE in by_learner
        for learner in META_LEARNERS
        if learner in by_learner and not _better(by_learner[learner], by_learner[BASELINE])
    ]
    checks: dict[str, Any] = {"not_beating_scratch": not_beating}
    benchmark, learner, target = OMNIGLOT_TARGET
    if learner in results.get(benchmark, {}):
        accuracy = results[benchmark][learner]["mean"]
        checks["omniglot_maml"] = {"accuracy": accuracy, "target": target, "ok": accuracy >= target}
    return checks


# -------------------------------------------------------------------------------------- tables


def _tasks(results: Results, benchmark: str) -> int:
    return max(r["tasks"] for r in results[benchmark].values())


def _cell(r: dict[str, Any], percent: bool) -> str:
    scale, digits = (100, 1) if percent else (1, 3)
    return f"{scale * r['mean']:.{digits}f} ± {scale * r['ci']:.{digits}f}"


def _published_cell(value: tuple[float, float] | None, percent: bool) -> str:
    if value is None:
        return "–"
    mean, ci = value
    return f"{mean:g} ± {ci:g}" if percent else f"{mean:.3f} ± {ci:.3f}"


def _pick(by_learner: dict[str, dict[str, Any]]) -> Callable:
    """``max`` where the metric is higher-is-better, else ``min``."""
    return max if next(iter(by_learner.values()))["higher_is_better"] else min


def _best_learner(by_learner: dict[str, dict[str, Any]]) -> str:
    return _pick(by_learner)(by_learner, key=lambda name: by_learner[name]["mean"])


def family_table(family: Family, results: Results, cfg: Config) -> str:
    """Our numbers (best in bold, † where a meta-learner does not beat scratch), then the
    published ones for the same columns."""
    columns = [(b, h) for b, h in zip(family.columns, family.headers, strict=True) if b in results]
    learners = list(cfg.pipeline.learners)
    most = max(_tasks(results, b) for b in results)
    columns = [  # a column scored on fewer tasks than the others says so
        (b, h if _tasks(results, b) == most else f"{h} ({_tasks(results, b)} tasks)")
        for b, h in columns
    ]
    lines = [f"### {family.title}", ""]
    lines += ["| learner | " + " | ".join(h for _, h in columns) + " |"]
    lines += ["|---|" + "---|" * len(columns)]
    best = {b: _best_learner(results[b]) for b, _ in columns}
    for learner in learners:
        cells = []
        for b, _ in columns:
            r, cell = results[b][learner], _cell(results[b][learner], family.percent)
            if best[b] == learner:
                cell = f"**{cell}**"
            beaten = BASELINE in results[b] and not _better(r, results[b][BASELINE])
            if learner in META_LEARNERS and beaten:
                cell += " †"
            cells.append(cell)
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    tables = family.published(cfg)
    shown = [(b, h) for b, h in columns if any(b in r for t in tables for r in t.rows.values())]
    if shown:  # one table under ours, the same columns, every paper's rows
        rows: dict[str, dict[str, tuple[float, float]]] = {}
        for table in tables:
            for name, row in table.rows.items():
                rows.setdefault(name, {}).update(row)
        sources = "; ".join(t.source for t in tables)
        lines += ["", f"Published ({sources}):", ""]
        lines += ["| paper's row | " + " | ".join(h for _, h in shown) + " |"]
        lines += ["|---|" + "---|" * len(shown)]
        for name, row in rows.items():
            cells = [_published_cell(row.get(b), family.percent) for b, _ in shown]
            lines.append(f"| {name} (ours: {PAPER_ROWS[name]}) | " + " | ".join(cells) + " |")
        lines += [f"\n{t.note}" for t in tables if t.note]
    if family.percent:
        lines += ["", published.BATCH_NORM_NOTE]
    return "\n".join(lines) + "\n"


def best_against_published(results: Results, cfg: Config) -> dict[str, dict[str, Any]]:
    """Per benchmark with published numbers: our best learner, the published number of the
    same learner (its best row) and the best published number, with the gaps (ours minus
    published, in the table's unit: % points for accuracy, nRMSE otherwise; positive is worse
    for nRMSE, better for accuracy)."""
    out: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        scale = 100 if family.percent else 1
        tables = family.published(cfg)
        for b in family.columns:
            cells = {n: row[b][0] for t in tables for n, row in t.rows.items() if b in row}
            if b not in results or not cells:
                continue
            by_learner = results[b]
            pick = _pick(by_learner)
            learner = _best_learner(by_learner)
            ours = scale * by_learner[learner]["mean"]
            paper_row = pick(cells, key=cells.__getitem__)
            same = [v for n, v in cells.items() if PAPER_ROWS[n] == learner]
            same_best = pick(same) if same else None
            out[b] = {
                "learner": learner,
                "ours": ours,
                "ci": scale * by_learner[learner]["ci"],
                "same_learner_published": same_best,
                "gap_to_same_learner": None if same_best is None else ours - same_best,
                "best_published": cells[paper_row],
                "best_published_row": paper_row,
                "gap_to_best": ours - cells[paper_row],
            }
    return out


def best_table(best: dict[str, dict[str, Any]]) -> str:
    """:func:`best_against_published` as a table."""

    def num(v: float | None, sign: str = "") -> str:
        return "–" if v is None else f"{v:{sign}.1f}" if abs(v) >= 1 else f"{v:{sign}.3f}"

    def gap(v: float | None) -> str:
        return num(v, "+")

    lines = [
        "### Best learner per benchmark against the papers",
        "",
        "Gaps are ours minus published, in the table's unit (accuracy in % points: negative is "
        "worse; nRMSE: positive is worse).",
        "",
        "| benchmark | best here | ours | same learner, published | gap | best published "
        "(row) | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, r in best.items():
        lines.append(
            f"| {b} | {r['learner']} | {num(r['ours'])} ± {num(r['ci'])} | "
            f"{num(r['same_learner_published'])} | {gap(r['gap_to_same_learner'])} | "
            f"{num(r['best_published'])} ({r['best_published_row']}) | {gap(r['gap_to_best'])} |"
        )
    return "\n".join(lines) + "\n"


def other_table(benchmarks: Sequence[str], results: Results, cfg: Config) -> str:
    """Benchmarks outside the paper families, in one plain table."""
    family = Family("Other benchmarks", tuple(benchmarks), tuple(benchmarks), False, lambda c: [])
    return family_table(family, results, cfg)


def protocol_table(cfg: Config, results: Results) -> str:
    """What ran per benchmark: K in training and at meta-test, step size, meta-batch, iterations,
    model, and the data it saw."""
    lines = [
        "| benchmark | K train (" + "/".join(META_LEARNERS) + ") | K test "
        "| α (one, or per learner) | meta-batch | iterations | model | data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for benchmark in results:
        bcfg = benchmark_config(cfg, benchmark)
        k = "/".join(str(learner_options(bcfg, n)["steps"]) for n in META_LEARNERS)
        k_test = "/".join(str(eval_steps(bcfg, n)) for n in META_LEARNERS)
        rates = [learner_options(bcfg, n)["inner_lr"] for n in META_LEARNERS]
        lr = "/".join(f"{r:g}" for r in rates) if len(set(rates)) > 1 else f"{rates[0]:g}"
        first = next(iter(results[benchmark].values()))
        conv = first.get("architecture", "mlp") == "conv4"
        model = f"Conv4, {bcfg.model.filters} filters" if conv else f"MLP {bcfg.model.hidden}"
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
    """Every way the run differs from the papers' protocols (:mod:`metalearn.published`)."""
    notes = []
    for benchmark in results:
        paper = published.paper_protocol(benchmark)
        if paper is None:
            continue
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


def default_config(root: Path) -> Config | None:
    """The committed ``params.yaml`` (git ``HEAD``): the default protocol an experiment's ``-S``
    changes depart from; None outside git."""
    from omegaconf import OmegaConf

    from metalearn.config import ConfigError, build_config

    text = _git("show", f"HEAD:{PARAMS_NAME}", root=root)
    if text == "unknown":
        return None
    try:
        return build_config(OmegaConf.to_container(OmegaConf.create(text)))
    except (ConfigError, ValueError):
        return None  # an older params.yaml that today's schema rejects


def _protocol_leaves(cfg: Config, benchmark: str) -> dict[str, Any]:
    """The keys a benchmark's stages read, flattened: algo, model, train, eval, the dataset's
    shared keys and its own setting."""
    bcfg = benchmark_config(cfg, benchmark)
    dataset, setting = parse_benchmark(cfg, benchmark)
    data = dataclasses.asdict(getattr(bcfg.data, dataset))
    data["settings"] = {setting: data["settings"][setting]}
    tree = {s: dataclasses.asdict(getattr(bcfg, s)) for s in ("algo", "model", "train", "eval")}
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


# ------------------------------------------------------------------------------------- plots


def bar_chart(benchmark: str, by_learner: dict[str, dict[str, Any]], path: Path) -> None:
    learners = list(by_learner)
    means = [by_learner[name]["mean"] for name in learners]
    cis = [by_learner[name]["ci"] for name in learners]
    metric = by_learner[learners[0]]["metric"]
    colors = ["#4c72b0" if name in META_LEARNERS else "#999999" for name in learners]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(learners, means, yerr=cis, capsize=4, color=colors)
    ax.set_ylabel(f"meta-test {metric}")
    ax.set_title(f"{benchmark} (grey: baselines)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_chart(cfg: Config, benchmark: str, path: Path, root: Path = Path()) -> None:
    """Meta-validation metric against iteration, one line per learner; a learner without
    meta-training (scratch) is a dashed level."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    column = "meta_val"
    for learner in cfg.pipeline.learners:
        curve = pl.read_csv(root / paths.train_curve(learner, benchmark))
        column = next(c for c in curve.columns if c.startswith("meta_val_"))
        points = curve.drop_nulls(column)
        if points.height == 1 and points["iteration"][0] == 0:
            ax.axhline(points[column][0], linestyle="--", color="#999999", label=learner)
        else:
            ax.plot(points["iteration"], points[column], marker=".", label=learner)
    ax.set_xlabel("meta-training iteration")
    ax.set_ylabel(column.replace("_", " "))
    ax.set_title(benchmark)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_plots(results: Results, plots: Path) -> None:
    """Each benchmark's plots into each of its MLflow runs; a run the tracking store no longer
    has (results restored from DVC's cache elsewhere) is skipped with a warning."""
    from metalearn import tracking

    for benchmark, by_learner in results.items():
        files = [plots / f"{benchmark}-test.png", plots / f"{benchmark}-curves.png"]
        for learner, r in by_learner.items():
            try:
                tracking.log_to_run(r["mlflow_run_id"], {}, artifacts=files)
            except Exception as error:  # noqa: BLE001 - the report stands without MLflow
                message = f"plots not logged to the run of {learner}-{benchmark}: {error}"
                warnings.warn(message, stacklevel=2)


# ------------------------------------------------------------------------------------ provenance


def provenance(cfg: Config, results: Results, root: Path) -> dict[str, Any]:
    """When, from which commit, on what hardware and with how much compute the numbers came."""
    train = [
        read_json(root / paths.train_metrics(learner, benchmark))
        for benchmark in results
        for learner in results[benchmark]
    ]
    devices = sorted({t.get("device", "?") for t in train})
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": _git("rev-parse", "--short", "HEAD", root=root),
        "experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "hardware": _hardware(devices),
        "train_seconds": round(sum(t.get("seconds", 0.0) for t in train), 1),
        "eval_seconds": round(
            sum(r.get("seconds", 0.0) for by in results.values() for r in by.values()), 1
        ),
    }


def _git(*args: str, root: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _hardware(devices: list[str]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    words = f"{cpu}, {os.cpu_count()} cores"
    if any(d.startswith("cuda") for d in devices):
        import torch

        words = f"{torch.cuda.get_device_name(0)} GPU; {words}"
    return words


def provenance_line(p: dict[str, Any]) -> str:
    return (
        f"Produced {p['date']} from commit `{p['commit']}` (experiment `{p['experiment']}`) on "
        f"{p['hardware']}; compute: {p['train_seconds'] / 60:.1f} min of meta-training and "
        f"{p['eval_seconds'] / 60:.1f} min of meta-testing, summed over the stages."
    )


# ---------------------------------------------------------------------------------------- write


def markdown(
    cfg: Config,
    results: Results,
    checks: dict[str, Any],
    prov: dict[str, Any],
    default: Config | None = None,
    best: dict[str, dict[str, Any]] | None = None,
) -> str:
    confidence = cfg.eval.confidence
    most = max(_tasks(results, b) for b in results)
    parts = [
        "# Results",
        "",
        provenance_line(prov),
        "",
        f"Each cell: mean over the benchmark's first {most} fixed meta-test tasks (fewer where a "
        f"column says so) ± the {confidence:.0%} Student-t half-width; best learner in bold; † "
        "marks a meta-learner that does not beat the `scratch` baseline there.",
        "",
    ]
    placed: set[str] = set()
    for family in FAMILIES:
        if any(b in results for b in family.columns):
            parts.append(family_table(family, results, cfg))
            placed |= set(family.columns)
    if rest := [b for b in results if b not in placed]:
        parts.append(other_table(rest, results, cfg))
    if best:
        parts.append(best_table(best))
    parts += ["### Sanity checks", ""]
    bad = checks["not_beating_scratch"]
    if not bad:
        parts.append("- Every meta-learner beats `scratch` on every benchmark.")
    else:
        by_benchmark: dict[str, list[str]] = {}
        for cell in bad:
            learner, _, benchmark = cell.partition("-")
            by_benchmark.setdefault(benchmark, []).append(learner)
        where = "; ".join(f"{b}: {', '.join(names)}" for b, names in by_benchmark.items())
        parts.append(f"- Not better than `scratch` ({len(bad)} cells, marked †): {where}.")
    if om := checks.get("omniglot_maml"):
        verdict = "reached" if om["ok"] else "NOT reached"
        parts.append(
            f"- MAML on Omniglot 5-way 1-shot: {100 * om['accuracy']:.1f} % "
            f"(target {100 * om['target']:.0f} %: {verdict})."
        )
    parts += ["", "### Protocol as run", "", protocol_table(cfg, results)]
    if diffs := protocol_differences(cfg, results):
        parts += ["### Differences from the papers' protocols", ""]
        parts += [f"- {d}" for d in diffs] + [""]
    if default is not None and (changes := changes_from_default(cfg, default, results)):
        parts += [
            f"### Changes from the default protocol (`params.yaml` at `{prov['commit']}`)",
            "",
        ]
        parts += [f"- {c}" for c in changes] + [""]
    return "\n".join(parts)


def write_report(cfg: Config, root: Path = Path(), log_plots: bool = True) -> dict[str, Any]:
    """Write ``results/summary.{json,md}`` and ``results/plots/*.png``; return the summary."""
    results = collect(cfg, root)
    checks = sanity_checks(results)
    prov = provenance(cfg, results, root)
    best = best_against_published(results, cfg)
    summary = {**summary_metrics(results), "checks": checks, "best": best, "provenance": prov}
    with atomic_dir(root / paths.PLOTS) as plots:
        for benchmark, by_learner in results.items():
            bar_chart(benchmark, by_learner, plots / f"{benchmark}-test.png")
            curves_chart(cfg, benchmark, plots / f"{benchmark}-curves.png", root)
    with atomic_file(root / paths.SUMMARY_MD) as tmp:
        tmp.write_text(markdown(cfg, results, checks, prov, default_config(root), best))
    write_json(root / paths.SUMMARY_JSON, summary)
    if log_plots:
        _log_plots(results, root / paths.PLOTS)
    return summary


# ------------------------------------------------------------------------------ README "Results"

README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def readme_with_results(readme: str, summary_md: str) -> str:
    """``readme`` with the block between the results markers replaced by the report (its tables
    and notes, without the top heading): the README's Results section is generated."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the markers {README_BEGIN} ... {README_END}")
    body = summary_md.split("\n", 1)[1].strip() if summary_md.startswith("# ") else summary_md
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m metalearn.report readme``: copy results/summary.md into README.md."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["readme"])
    parser.parse_args(argv)
    readme = Path("README.md")
    readme.write_text(readme_with_results(readme.read_text(), paths.SUMMARY_MD.read_text()))
    print(f"{readme}: Results section updated from {paths.SUMMARY_MD}")
    return 0


__all__ = [
    "FAMILIES",
    "collect",
    "readme_with_results",
    "sanity_checks",
    "summary_metrics",
    "write_report",
]

if __name__ == "__main__":
    raise SystemExit(main())
