"""Synthetic meta-regression families of the Adjoint MAML paper.

A *family* is a distribution over functions ``f_theta : R^dim -> R`` indexed by a parameter
vector ``theta``; a *task* is one function observed at ``shots`` support points and ``queries``
query points drawn uniformly from the domain.

* CosMixture: ``f(x) = -0.1 * sum_i A cos(omega x_i + phi) - sum_i x_i^2`` with
  ``theta = (A, omega, phi)`` (shared by all dimensions), ``A ~ U[amplitude]``,
  ``omega ~ U[frequency]``, ``phi ~ U[phase]``.
* Alpine: ``f(x) = sum_i |x_i sin(x_i + phi_i) + 0.1 x_i|`` with ``theta = (phi_1..phi_dim)``,
  ``phi_i ~ U[phase]`` independently.

In both, ``x ~ U(domain)^dim``. Function parameters and inputs are drawn in float64 from
explicit ``torch.Generator``s; targets are computed in float64 and cast at the end.

Fixed tasks are stored as Parquet with one row per point (see :func:`tasks_to_frame`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import polars as pl
import torch
from torch import Tensor

from metalearn.errors import DataError

Tasks = tuple[Tensor, Tensor]  # (x [n_tasks, n, dim], y [n_tasks, n])
SPLITS = ("train", "val", "test")
ROLES = ("support", "query")


@runtime_checkable
class Family(Protocol):
    """A distribution over functions ``R^dim -> R``."""

    name: str
    dim: int
    n_params: int
    domain: tuple[float, float]

    def sample_functions(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` parameter vectors, ``[n, n_params]`` float64."""
        ...

    def sample_inputs(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Draw inputs ``x ~ U(domain)^dim`` of shape ``[*shape, dim]``, float64."""
        ...

    def evaluate(self, fn_params: Tensor, x: Tensor) -> Tensor:
        """``y[..., j] = f_{fn_params[...]}(x[..., j, :])``.

        Shapes: ``fn_params [..., p]``, ``x [..., n, dim]`` -> ``y [..., n]``.
        """
        ...


def _uniform(
    low: Tensor | float, high: Tensor | float, shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=generator.device)
    return low + (high - low) * u


def _interval(cfg: Mapping[str, Any], key: str) -> tuple[float, float]:
    if key not in cfg:
        raise DataError(f"family config is missing the key {key!r}")
    value = cfg[key]
    if len(value) != 2:
        raise DataError(f"{key} must be an interval [low, high], got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not low <= high:
        raise DataError(f"{key} must satisfy low <= high, got [{low}, {high}]")
    return low, high


@dataclass(frozen=True)
class _Base:
    dim: int
    domain: tuple[float, float]

    def sample_inputs(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return _uniform(self.domain[0], self.domain[1], (*shape, self.dim), generator)

    def _bounds(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def sample_functions(self, n: int, generator: torch.Generator) -> Tensor:
        # One draw of [n, n_params] uniforms, scaled per column to each parameter's interval.
        low, high = self._bounds()
        return _uniform(
            low.to(generator.device), high.to(generator.device), (n, len(low)), generator
        )

    @property
    def param_bounds(self) -> tuple[Tensor, Tensor]:
        """Per-parameter ``(low, high)``, each ``[n_params]`` float64."""
        return self._bounds()


@dataclass(frozen=True)
class CosMixture(_Base):
    """``f(x) = -0.1 sum_i A cos(omega x_i + phi) - sum_i x_i^2``, ``theta = (A, omega, phi)``."""

    amplitude: tuple[float, float] = (0.1, 1.0)
    frequency: tuple[float, float] = (0.5 * np.pi, 2.0 * np.pi)
    phase: tuple[float, float] = (3.0, 6.0)
    name: ClassVar[str] = "cosmixture"
    n_params: ClassVar[int] = 3

    def _bounds(self) -> tuple[Tensor, Tensor]:
        lows, highs = zip(self.amplitude, self.frequency, self.phase, strict=True)
        return torch.tensor(lows, dtype=torch.float64), torch.tensor(highs, dtype=torch.float64)

    def evaluate(self, fn_params: Tensor, x: Tensor) -> Tensor:
        # [..., 1, 1] so each function's scalars broadcast over points and dimensions.
        amp, omega, phi = (fn_params[..., k, None, None] for k in range(3))
        return -0.1 * (amp * torch.cos(omega * x + phi)).sum(-1) - x.square().sum(-1)


@dataclass(frozen=True)
class Alpine(_Base):
    """``f(x) = sum_i |x_i sin(x_i + phi_i) + 0.1 x_i|``, ``theta = (phi_1, ..., phi_dim)``."""

    phase: tuple[float, float] = (-5.0 * np.pi / 12.0, 5.0 * np.pi / 12.0)
    name: ClassVar[str] = "alpine"

    @property
    def n_params(self) -> int:  # type: ignore[override]
        return self.dim

    def _bounds(self) -> tuple[Tensor, Tensor]:
        low = torch.full((self.dim,), self.phase[0], dtype=torch.float64)
        high = torch.full((self.dim,), self.phase[1], dtype=torch.float64)
        return low, high

    def evaluate(self, fn_params: Tensor, x: Tensor) -> Tensor:
        phi = fn_params[..., None, :]  # [..., 1, dim]: one phase per dimension, shared by points
        return (x * torch.sin(x + phi) + 0.1 * x).abs().sum(-1)


FAMILIES: dict[str, type[_Base]] = {"cosmixture": CosMixture, "alpine": Alpine}


def make_family(name: str, cfg: Mapping[str, Any] | Any) -> Family:
    """Build a family from its ``data.<name>`` section of params.yaml.

    ``cfg`` is a mapping (a plain dict, ``dataclasses.asdict(...)``, an OmegaConf node) or a
    dataclass instance; the keys used are ``dim``, ``domain`` and the family's parameter
    intervals (CosMixture: ``amplitude``, ``frequency``, ``phase``; Alpine: ``phase``). Other keys
    (``seed``, ``functions``, ``settings``) are ignored.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = dataclasses.asdict(cfg)
    if name not in FAMILIES:
        raise DataError(f"unknown synthetic family {name!r}; expected one of {sorted(FAMILIES)}")
    if "dim" not in cfg:
        raise DataError("family config is missing the key 'dim'")
    dim = int(cfg["dim"])
    if dim < 1:
        raise DataError(f"dim must be >= 1, got {dim}")
    domain = _interval(cfg, "domain")
    if name == "cosmixture":
        return CosMixture(
            dim=dim,
            domain=domain,
            amplitude=_interval(cfg, "amplitude"),
            frequency=_interval(cfg, "frequency"),
            phase=_interval(cfg, "phase"),
        )
    return Alpine(dim=dim, domain=domain, phase=_interval(cfg, "phase"))


def split_functions(family: Family, counts: Mapping[str, int], seed: int) -> dict[str, Tensor]:
    """Draw the meta-train/val/test functions: ``{"train": [n_train, p], "val": ..., "test": ...}``.

    One generator seeded with ``seed`` draws train, then val, then test: the splits are disjoint
    by construction (distinct draws), and the train functions depend only on ``seed`` and
    ``counts["train"]`` (not on the val/test counts).
    """
    missing = [s for s in SPLITS if s not in counts]
    if missing:
        raise DataError(f"counts must give {list(SPLITS)}; missing {missing}")
    generator = torch.Generator().manual_seed(int(seed))
    splits = {}
    for split in SPLITS:
        n = int(counts[split])
        if n < 0:
            raise DataError(f"counts[{split!r}] must be >= 0, got {n}")
        splits[split] = family.sample_functions(n, generator)
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            shared = (splits[a][:, None, :] == splits[b][None, :, :]).all(-1).any()
            assert not bool(shared), f"identical function parameters in splits {a} and {b}"
    return splits


def sample_tasks(
    family: Family,
    fn_params: Tensor,
    shots: int,
    queries: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tasks, Tasks]:
    """One task per function: ``((x_s, y_s), (x_q, y_q))``.

    ``x_s ~ U(domain)^dim`` of shape ``[n_tasks, shots, dim]``, ``y_s = f(x_s)`` of shape
    ``[n_tasks, shots]``, and likewise for the ``queries`` query points, drawn independently
    (support first, then query). Computed in float64 on the generator's device, then cast to
    ``dtype``. Targets are raw (see :func:`standardize`).
    """
    if fn_params.ndim != 2 or fn_params.shape[1] != family.n_params:
        raise DataError(
            f"fn_params must be [n_tasks, {family.n_params}], got {tuple(fn_params.shape)}"
        )
    fn = fn_params.to(device=generator.device, dtype=torch.float64)
    n_tasks = fn.shape[0]
    x_s = family.sample_inputs((n_tasks, int(shots)), generator)
    x_q = family.sample_inputs((n_tasks, int(queries)), generator)
    y_s, y_q = family.evaluate(fn, x_s), family.evaluate(fn, x_q)
    return (x_s.to(dtype), y_s.to(dtype)), (x_q.to(dtype), y_q.to(dtype))


def target_stats(
    family: Family, train_fn_params: Tensor, generator: torch.Generator, points: int = 100
) -> tuple[float, float]:
    """Mean and standard deviation of ``y = f(x)`` over the meta-train functions.

    ``points`` inputs ``x ~ U(domain)^dim`` per function; ``mean = E[y]``,
    ``std = sqrt(E[(y - mean)^2])`` (population). Used to standardize every target as
    ``(y - mean) / std`` (train, val and test alike), from meta-train functions only.
    """
    fn = train_fn_params.to(device=generator.device, dtype=torch.float64)
    if fn.ndim != 2 or fn.shape[0] == 0:
        raise DataError("target_stats needs a non-empty [n_functions, n_params] tensor")
    y = family.evaluate(fn, family.sample_inputs((fn.shape[0], int(points)), generator))
    return float(y.mean()), float(y.std(correction=0))


def standardize(tasks: Tasks, mean: float, std: float) -> Tasks:
    """``(x, (y - mean) / std)`` for one role's ``(x, y)`` of a task batch."""
    x, y = tasks
    return x, (y - mean) / std


def tasks_to_frame(support: Tasks, query: Tasks) -> pl.DataFrame:
    """Long table of a task batch: one row per point.

    Columns ``task`` (Int64), ``role`` ("support" | "query"), ``point`` (Int64, index within the
    role), ``x0 .. x{dim-1}`` (Float64), ``y`` (Float64). Rows are ordered by task, then support
    before query, then point. :func:`frame_to_tasks` inverts it exactly.
    """
    (x_s, y_s), (x_q, y_q) = support, query
    if (
        x_s.ndim != 3
        or x_q.ndim != 3
        or x_s.shape[0] != x_q.shape[0]
        or x_s.shape[2] != x_q.shape[2]
    ):
        raise DataError(
            "support/query x must be [n_tasks, n, dim] with equal n_tasks and dim, got "
            f"{tuple(x_s.shape)} and {tuple(x_q.shape)}"
        )
    if y_s.shape != x_s.shape[:2] or y_q.shape != x_q.shape[:2]:
        raise DataError("y must be [n_tasks, n] matching x")
    n_tasks, shots, dim = x_s.shape
    queries = x_q.shape[1]
    n = shots + queries

    def arr(t: Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    x = np.concatenate([arr(x_s), arr(x_q)], axis=1).reshape(n_tasks * n, dim)
    y = np.concatenate([arr(y_s), arr(y_q)], axis=1).reshape(n_tasks * n)
    role = np.tile(np.array(["support"] * shots + ["query"] * queries, dtype=object), n_tasks)
    point = np.tile(np.concatenate([np.arange(shots), np.arange(queries)]), n_tasks)
    columns: dict[str, pl.Series] = {
        "task": pl.Series(np.repeat(np.arange(n_tasks), n), dtype=pl.Int64),
        "role": pl.Series(role.tolist(), dtype=pl.String),
        "point": pl.Series(point, dtype=pl.Int64),
    }
    for i in range(dim):
        columns[f"x{i}"] = pl.Series(x[:, i], dtype=pl.Float64)
    columns["y"] = pl.Series(y, dtype=pl.Float64)
    return pl.DataFrame(columns)


def frame_to_tasks(df: pl.DataFrame, dtype: torch.dtype = torch.float64) -> tuple[Tasks, Tasks]:
    """Inverse of :func:`tasks_to_frame`: ``((x_s, y_s), (x_q, y_q))``, tasks in ascending id.

    Raises ``ValueError`` naming the problem if a column is missing or has nulls, a role is not
    "support"/"query", the tasks do not all have the same number of support rows and the same
    number of query rows, or a task's point indices are not ``0 .. n-1``.
    """
    required = ["task", "role", "point", "y"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"task frame is missing columns {missing}")
    dim = 0
    while f"x{dim}" in df.columns:
        dim += 1
    if dim == 0:
        raise DataError("task frame has no input columns x0 .. x{dim-1}")
    x_cols = [f"x{i}" for i in range(dim)]
    extra = sorted(set(df.columns) - set(required) - set(x_cols))
    if extra:
        raise DataError(
            f"task frame has unexpected columns {extra} (x columns must be x0..x{{d-1}})"
        )
    nulls = [c for c in required + x_cols if df[c].null_count() > 0]
    if nulls:
        raise DataError(f"task frame has null values in columns {nulls}")
    bad_roles = sorted(set(df["role"].unique().to_list()) - set(ROLES))
    if bad_roles:
        raise DataError(f"task frame has unknown roles {bad_roles}; expected {list(ROLES)}")

    counts = df.group_by("task").agg(
        (pl.col("role") == "support").sum().alias("support"),
        (pl.col("role") == "query").sum().alias("query"),
    )
    tasks: list[Tasks] = []
    for role in ROLES:
        sizes = counts[role].unique().to_list()
        if len(sizes) != 1:
            raise DataError(
                f"tasks have different numbers of {role} rows: {sorted(sizes)} "
                "(every task must have the same number of support and of query rows)"
            )
        n = int(sizes[0])
        part = df.filter(pl.col("role") == role).sort(["task", "point"])
        n_tasks = counts.height
        expected = np.tile(np.arange(n), n_tasks)
        if not np.array_equal(part["point"].to_numpy(), expected):
            raise DataError(f"{role} point indices must be 0..{n - 1} within every task, once each")
        x = part.select(x_cols).to_numpy().astype(np.float64).reshape(n_tasks, n, dim)
        y = part["y"].to_numpy().astype(np.float64).reshape(n_tasks, n)
        tasks.append((torch.from_numpy(x.copy()).to(dtype), torch.from_numpy(y.copy()).to(dtype)))
    return tasks[0], tasks[1]


def write_tasks(path: str | Path, support: Tasks, query: Tasks) -> None:
    """Write a task batch to ``path`` as Parquet (format of :func:`tasks_to_frame`)."""
    tasks_to_frame(support, query).write_parquet(path)


def read_tasks(path: str | Path, dtype: torch.dtype = torch.float64) -> tuple[Tasks, Tasks]:
    """Read a task batch written by :func:`write_tasks`."""
    return frame_to_tasks(pl.read_parquet(path), dtype=dtype)
