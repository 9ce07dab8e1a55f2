"""Typed, validated parameters: ``params.yaml`` plus command-line overrides.

``params.yaml`` (repository root) is the single source of parameters. :func:`load_config` composes
it with Hydra's compose API, applies Hydra overrides such as ``algo.steps=100`` and validates the
result into the frozen dataclasses below (:class:`Config` and its sections, whose field names are
the keys of ``params.yaml``).

Precedence, lowest to highest:

1. ``params.yaml``;
2. the overrides given to :func:`load_config` (a stage's command line, see :func:`split_cli`);
3. per benchmark, the keys its ``pipeline.benchmarks.<name>`` entry sets (:func:`benchmark_config`);
4. per learner, ``algo.<learner>.<key>`` when not null over the shared ``algo.<key>``
   (``steps`` and ``inner_lr``, see :func:`learner_options`) within the same scope (top level or
   benchmark entry); at meta-test, ``algo.<learner>.eval_steps``, then ``eval.steps``, then the
   learner's training ``steps`` (see :func:`eval_steps`).

Error policy: every problem is a :class:`ConfigError` (a ``ValueError``) raised while loading, so a
stage fails before doing any work, with a message that names the dotted key, the bad value and what
is allowed, e.g. ``algo.steps = 0: must be an integer >= 1``. Nothing is filled in silently: every
key is required (``null`` where documented as optional; a benchmark entry's override sections and
a learner's keys may be left out), and unknown keys are errors everywhere,
including keys added with Hydra's ``+key=value`` form. Typing is strict: an integer is accepted for
a float, but neither a bool nor a float is accepted for an integer.

Benchmarks are named ``"<dataset>-<setting>"`` (split at the first ``-``): ``dataset`` is a field of
:class:`DataConfig` and ``setting`` a key of ``data.<dataset>.settings``. A new dataset is a new
field of :class:`DataConfig` whose section has ``settings`` and a ``meta_test_tasks`` property.

Setting names start with a letter (``shot50``, not ``50shot``): Hydra's override grammar, which
``dvc exp run -S`` also uses, cannot address a key that starts with a digit.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metalearn.config.checks import build_config
from metalearn.config.errors import ConfigError
from metalearn.config.precedence import (
    all_benchmarks,
    benchmark_config,
    dataset_config,
    learners_of,
    parse_benchmark,
)
from metalearn.config.schema import (
    EFFICIENCY_PROBLEMS,
    ClassSplit,
    Config,
    EfficiencyConfig,
    FewShotSetting,
    JesterConfig,
    MiniImageNetConfig,
    ModelConfig,
    MovieLensConfig,
    OmniglotConfig,
    RatingSetting,
    TuneConfig,
    UserSplit,
)

PARAMS_FILE = "params.yaml"

# The selector arguments of a stage script; everything else on its command line is an override.
SELECTORS = ("learner", "benchmark", "dataset")


def default_params_path() -> Path:
    """The first ``params.yaml`` from the working directory upwards, else ``$DVC_ROOT``'s, else
    the one of this source checkout. DVC runs a stage in its repository's root, and for a
    temporary or queued experiment (``dvc exp run --temp`` / ``--queue``) in a copy under
    ``.dvc/tmp/`` whose ``params.yaml`` holds the ``-S`` changes, while ``DVC_ROOT`` names the
    parent repository: the working directory is the one to trust."""
    cwd = Path.cwd().resolve()
    for directory in (cwd, *cwd.parents):
        if (directory / PARAMS_FILE).is_file():
            return directory / PARAMS_FILE
    if root := os.environ.get("DVC_ROOT"):
        return Path(root).resolve() / PARAMS_FILE
    return Path(__file__).resolve().parents[3] / PARAMS_FILE


def _unknown_key_error(error: ConfigCompositionException, params: Path) -> ConfigError:
    """Turn Hydra's 'Could not override' into a message naming the key and the valid ones."""
    key = getattr(error.__cause__, "full_key", None)
    if not key:
        return ConfigError(f"cannot apply the overrides: {error}")
    parent, _, _ = key.rpartition(".")
    node: Any = OmegaConf.to_container(OmegaConf.load(params))
    for segment in parent.split(".") if parent else ():
        node = node.get(segment) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return ConfigError(f"unknown key '{key}': '{parent}' is a value, not a section")
    where = f"under '{parent}'" if parent else "at the top level"
    return ConfigError(
        f"unknown key '{key}'; valid keys {where}: {', '.join(map(str, node))}. "
        f"Fix the spelling: {params.name} lists every parameter, so new keys are not accepted."
    )


def _yaml_problem(params: Path, error: yaml.MarkedYAMLError) -> str:
    """A YAML syntax error as one line: the file, the line and column, and what is wrong."""
    mark, context = error.problem_mark, error.context_mark
    where = f"{params}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(params)
    what = error.problem or "a syntax error"
    if error.context and context is not None:
        what += f" ({error.context} from line {context.line + 1}, column {context.column + 1})"
    return f"{where}: not valid YAML: {what}; fix the file (YAML indents with spaces, not tabs)"


def _compose(params: Path, overrides: list[str]) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(params.parent), version_base=None):
            composed = compose(config_name=params.stem, overrides=overrides)
        data = OmegaConf.to_container(composed, resolve=True)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the overrides {overrides}: {e}") from e
    except ConfigCompositionException as e:
        raise _unknown_key_error(e, params) from e
    except yaml.MarkedYAMLError as e:  # not YAML: a tab, an unclosed bracket, ...
        raise ConfigError(_yaml_problem(params, e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot load {params}: {e}") from e
    finally:
        GlobalHydra.instance().clear()
    if not isinstance(data, dict):
        raise ConfigError(f"{params} must hold a mapping of sections")
    return data


def load_config(overrides: Sequence[str] = (), params_path: str | Path | None = None) -> Config:
    """Compose ``params.yaml`` (default: :func:`default_params_path`) with Hydra ``overrides``
    (e.g. ``["algo.steps=100"]``) and validate it; raises :class:`ConfigError`."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of strings, not one string")
    params = Path(params_path).resolve() if params_path is not None else default_params_path()
    if not params.is_file():
        raise ConfigError(f"parameter file not found: {params}")
    if params.suffix != ".yaml":
        raise ConfigError(f"parameter file must end in .yaml (Hydra's rule): {params}")
    return build_config(_compose(params, list(overrides)))


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings as one ``{"a.b.c": leaf}`` mapping."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", tree)
    return flat


def split_cli(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split a stage's arguments into the selectors (``learner=<name>``, ``benchmark=<name>``)
    and the Hydra overrides (everything else, e.g. ``algo.steps=100``)."""
    selected: dict[str, str] = {}
    overrides: list[str] = []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep and not item.startswith("~"):  # "~key" is Hydra's deletion
            raise ConfigError(
                f"argument {item!r} is not KEY=VALUE; expected "
                f"{' '.join(f'{s}=<name>' for s in SELECTORS)} and overrides such as algo.steps=10"
            )
        if key not in SELECTORS:
            overrides.append(item)
        elif key in selected or not value:
            raise ConfigError(f"{item!r}: give {key}=<name> once, with a non-empty name")
        else:
            selected[key] = value
    return selected, overrides


__all__ = [
    "ClassSplit",
    "Config",
    "ConfigError",
    "EFFICIENCY_PROBLEMS",
    "EfficiencyConfig",
    "FewShotSetting",
    "JesterConfig",
    "MiniImageNetConfig",
    "ModelConfig",
    "MovieLensConfig",
    "OmniglotConfig",
    "RatingSetting",
    "SELECTORS",
    "TuneConfig",
    "UserSplit",
    "all_benchmarks",
    "benchmark_config",
    "build_config",
    "dataset_config",
    "default_params_path",
    "flatten",
    "learners_of",
    "load_config",
    "parse_benchmark",
    "split_cli",
]
