"""The command line every stage script shares (``pipeline/<stage>.py``): selectors such as
``benchmark=<name>`` and ``KEY=VALUE`` overrides in, one short line out.

A stage of one cell (train, evaluate, tune) reads its cell from its file under ``configs/`` when
DVC runs it (``DVC_STAGE`` set, no overrides): stage resolve resolved the config once, and DVC
tracks that file. Run by hand, or with overrides, the stage resolves its cell from
``params.yaml`` in memory, through the same function stage resolve uses.

Errors a user can fix (:class:`~metalearn.errors.StageError`) and a full disk print one line
and exit 1; SIGTERM and SIGINT stop the stage cleanly (exit 128 + the signal's number, whatever
error a library turned the signal into); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from metalearn.config import Config, ConfigError, load_config, split_cli
from metalearn.errors import InterruptedStage, StageError
from metalearn.lifetime import interruptible, interruption
from metalearn.values import NAME_PATTERN


@dataclass(frozen=True)
class Stage:
    """A stage for :func:`main`: ``run(cfg, *selected)``, or for a stage of one cell
    ``run(cell)`` with the cell ``read(cell_file(*selected))`` under DVC and
    ``resolve(cfg, *selected)`` otherwise."""

    run: Callable[..., Any]
    selectors: tuple[str, ...] = ()
    resolve: Callable[..., Any] | None = None
    cell_file: Callable[..., Path] | None = None
    read: Callable[[Path], Any] | None = None
    line: Callable[[Any], str] | None = None  # the result as one line; default :func:`brief`


def _selector_values(cfg: Config, selector: str) -> list[str]:
    """What ``selector=`` may name in this params.yaml (the stages dvc.yaml defines)."""
    if selector == "dataset":
        return list(cfg.pipeline.datasets)
    if selector == "benchmark":
        return list(cfg.pipeline.benchmarks)
    return [*cfg.pipeline.learners, *cfg.pipeline.cf_learners]


def help_text(doc: str, selectors: Sequence[str]) -> str:
    """The ``--help`` text: the script's docstring, each selector's values, how to override."""
    lines = [doc.strip(), ""]
    try:
        cfg = load_config()
        lines += [f"  {s}=  one of: {', '.join(_selector_values(cfg, s))}" for s in selectors]
    except (StageError, FileNotFoundError) as error:  # a broken params.yaml: say so, still help
        lines.append(f"  (params.yaml does not load: {error})")
    lines += [
        "  KEY=VALUE  any params.yaml key, for this run only (docs/parameters.md),",
        "             e.g. train.iterations=10 or algo.maml.steps=3",
    ]
    return "\n".join(lines)


def _selected(stage: Stage, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The selectors' values in the stage's order, and the overrides."""
    selected, overrides = split_cli(argv)
    missing = [s for s in stage.selectors if s not in selected]
    extra = [s for s in selected if s not in stage.selectors]
    if missing or extra:
        usage = " ".join(f"{s}=<name>" for s in stage.selectors)
        raise ConfigError(f"usage: {usage} [overrides such as algo.steps=10]")
    for selector in stage.selectors:
        if not NAME_PATTERN.fullmatch(selected[selector]):  # it becomes part of a path
            raise ConfigError(
                f"{selector}={selected[selector]!r} is not a name (letters, digits, '-', '_')"
            )
    return [selected[s] for s in stage.selectors], overrides


def _run(stage: Stage, argv: Sequence[str]) -> Any:
    values, overrides = _selected(stage, argv)
    if stage.read is not None and "DVC_STAGE" in os.environ and not overrides:
        return stage.run(stage.read(stage.cell_file(*values)))
    cfg = load_config(overrides)
    for selector, value in zip(stage.selectors, values, strict=True):
        names = _selector_values(cfg, selector)
        if value not in names:
            raise ConfigError(
                f"{selector}={value} is not in params.yaml; one of: {', '.join(names)}"
            )
    if stage.resolve is not None:
        return stage.run(stage.resolve(cfg, *values))
    return stage.run(cfg, *values)


def main(stage: Stage, argv: Sequence[str], doc: str = "") -> int:
    """Entry point of a stage script: ``KEY=VALUE`` arguments, the selectors named first;
    ``--help`` prints ``doc`` (the script's docstring) and what each selector may name."""
    if {"-h", "--help"} & set(argv):
        print(help_text(doc, stage.selectors))
        return 0
    try:
        with interruptible():
            result = _run(stage, argv)
    except BaseException as error:
        stopped = interruption() or (error if isinstance(error, InterruptedStage) else None)
        if stopped is None:
            return _failed(error)
        print(f"error: {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    print((stage.line or brief)(result))
    return 0


def _failed(error: BaseException) -> int:
    """Exit 1 after one line for an error a user can fix; re-raise any other (a bug)."""
    if isinstance(error, StageError):
        print(f"error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {error.filename}" if error.filename else ""
        print(
            f"error: no space left on the device{where}; free some space (df -h .) and re-run: "
            "the earlier outputs are unchanged",
            file=sys.stderr,
        )
        return 1
    raise error


def brief(result: Any, keys: int = 6) -> str:
    """A stage's result as one readable line (DVC shows it in its log): a mapping's entries as
    ``key=value``, floats to 4 significant digits, a nested mapping by its first keys and a list
    by its length. The whole result is in the stage's outputs and MLflow run."""
    if not isinstance(result, Mapping):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, Mapping):
            names = [str(k) for k in value]
            value = "{" + ", ".join(names[:keys]) + (", …" if len(names) > keys else "") + "}"
        elif isinstance(value, list | tuple):
            value = f"[{len(value)} items]"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def exit_now(code: int) -> NoReturn:
    """End a stage's process without the interpreter's teardown (unloading torch's operator
    libraries and the like: ~1.5 s a stage on a 2-core CPU). Safe here: every output is closed
    and renamed into place and every MLflow run ended before ``main`` returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
