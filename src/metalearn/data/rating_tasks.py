"""Episodes of the collaborative-filtering benchmarks (Jester, MovieLens 100K and 1M).

Seed 000's "Meta Collaborative Filtering": each user is a task; a task's points are the items
the user rated, with input x = the item's features and target y = the rating scaled to [0, 1],
``y = (r - lo) / (hi - lo)`` with the dataset's rating scale (Jester [-10, 10], MovieLens
[1, 5]; :data:`metalearn.data.ratings.RATING_RANGE`). The regression loss is the MSE on that
scale, so the reported nRMSE is the RMSE of the predicted ratings divided by ``hi - lo``.

**Users.** A seeded shuffle (``data.<dataset>.seed``) splits the users into meta-test (the first
``round(users.test * n)``), meta-val (the next ``round(users.val * n)``) and meta-train (the
rest). The split does not depend on the setting, so every setting of a dataset shares it. A
setting (``shots``, ``queries``) uses only the *eligible* users, those with at least
``shots + queries`` ratings. The fixed meta-val / meta-test tasks are ``val_tasks`` /
``test_tasks`` eligible users of that split drawn without replacement, each with ``shots``
support and ``queries`` query ratings drawn without replacement (so disjoint). Meta-train tasks
are sampled on the fly: an eligible meta-train user uniformly (with replacement across tasks)
and a fresh random disjoint support/query subset of their ratings.

**Item features.** Jester: a one-hot vector over its 100 jokes (``in_dim = 100``). MovieLens: an
``embedding_dim``-dimensional embedding from the exact truncated SVD (computed in float64 from
``torch.linalg.eigh`` of the smaller Gram matrix: 5x faster than ``torch.linalg.svd``, same
result to ~1e-10; the randomized ``torch.svd_lowrank`` was not used: it takes no generator and
is approximate) of the **meta-train users'** rating matrix only: rows = meta-train users,
columns = the items they rated, each user's ratings (on the [0, 1] scale) centred by that
user's mean, missing entries 0. An item's embedding is its row of the right singular vectors
times the singular values, ``V[:, :k] * s[:k]``, each component's sign fixed so that its
largest-magnitude entry is positive, then standardized per dimension (mean 0, population std 1)
over those items. Items that no meta-train user rated (seen only in meta-val/meta-test users) get
the zero vector, i.e. the mean item after standardization: nothing about them leaks from
held-out users. The embedding dimension must not exceed the matrix's numerical rank.

**Every meta-test user.** Besides the protocol's ``test_tasks``, ``test_all.parquet`` holds one
task per eligible meta-test user, so that a learner can also be scored on all of them: its first
``test_tasks`` tasks are those of ``test.parquet``, row for row, then one task for each other
eligible meta-test user, by user id, with ``shots + queries`` of their ratings drawn without
replacement from a stream of its own (the protocol's tasks and numbers do not change).

**Randomness.** numpy generators seeded by ``(seed mod 2**64, stream)``, one stream each for the
user split (0), the meta-val tasks (1), the meta-test tasks (2) and the other meta-test users'
tasks (3): the same seed gives the same split and the same fixed tasks.

**Files** (in the benchmark directory):

* ``ratings.parquet``: every rating, columns ``user`` (the file's id; Jester:
  ``part * 100000 + row``), ``item`` (row of ``items.npy``), ``y`` (Float64 in [0, 1]),
  ``split`` ("train" | "val" | "test", the user's split);
* ``items.npy``: float32 ``[n_items, in_dim]`` item features (``np.save``, no pickle);
  ``item_ids.npy``: int64 ``[n_items]``, each row's id in the official file (Jester: the joke's
  column 1..100 minus 1, i.e. 0..99; MovieLens: the movie id);
* ``val.parquet``, ``test.parquet``: the fixed tasks, identical for every learner, columns
  ``task``, ``role`` ("support" | "query"), ``item``, ``target`` (= y) and ``user``; rows by
  task, the support rows before the query rows;
* ``test_all.parquet``: the same columns, a task per eligible meta-test user (see above);
  ``meta["tasks"]["test_all"]`` counts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from metalearn.data.episodes import Batch, register
from metalearn.data.ratings import JESTER_JOKES, RATING_RANGE, read_ratings, scale
from metalearn.errors import DataError

RATINGS = "ratings.parquet"
ITEMS = "items.npy"
ITEM_IDS = "item_ids.npy"
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "meta-train", "val": "meta-val", "test": "meta-test"}
ROLES = ("support", "query")
STREAM_SPLIT, STREAM_VAL, STREAM_TEST, STREAM_TEST_ALL = 0, 1, 2, 3
#: the split of fixed tasks of every eligible meta-test user (the protocol's tasks first)
ALL_USERS = "test_all"
#: singular values below RANK_RTOL * (the largest) count as zero (numerical rank)
RANK_RTOL = 1e-6


def rng(seed: int, stream: int) -> np.random.Generator:
    """The numpy generator of ``stream`` under ``seed`` (any int: taken modulo 2**64)."""
    return np.random.default_rng([int(seed) % 2**64, stream])


# ----------------------------------------------------------------------------------- the split


def split_users(users: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Split the distinct ``users`` by a seeded shuffle: ``round(test * n)`` meta-test, then
    ``round(val * n)`` meta-val, the rest meta-train; each split's ids sorted."""
    users = np.unique(np.asarray(users))
    n = len(users)
    n_test, n_val = round(test * n), round(val * n)
    n_train = n - n_test - n_val
    if min(n_test, n_val, n_train) < 1:
        raise DataError(
            f"cannot split {n} users into meta-train / meta-val / meta-test = {n_train} / "
            f"{n_val} / {n_test} (users.val = {val}, users.test = {test}): each needs >= 1 user"
        )
    perm = users[rng(seed, STREAM_SPLIT).permutation(n)]
    return {
        "test": np.sort(perm[:n_test]),
        "val": np.sort(perm[n_test : n_test + n_val]),
        "train": np.sort(perm[n_test + n_val :]),
    }


def group_by_user(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``user`` sorted ascending: the distinct users, each one's first row and row count."""
    users, starts, counts = np.unique(user, return_index=True, return_counts=True)
    return users, starts, counts


def sample_fixed_tasks(
    table: pl.DataFrame,
    users: np.ndarray,
    n_tasks: int,
    shots: int,
    queries: int,
    generator: np.random.Generator,
) -> pl.DataFrame:
    """``n_tasks`` of the ``users`` (drawn without replacement), each with ``shots`` support and
    ``queries`` query ratings drawn without replacement from the user's rows of ``table``
    (columns user, item, y; sorted by user). Columns task, role, item, target, user."""
    chosen = np.asarray(users)[generator.choice(len(users), size=n_tasks, replace=False)]
    return user_tasks(table, chosen, shots, queries, generator)


def user_tasks(
    table: pl.DataFrame,
    users: np.ndarray,
    shots: int,
    queries: int,
    generator: np.random.Generator,
    first_task: int = 0,
) -> pl.DataFrame:
    """A task for each of ``users`` in their order, numbered from ``first_task``, as
    :func:`sample_fixed_tasks` makes them (its draws of ratings, in the same order)."""
    user_col = table["user"].to_numpy()
    items, ys = table["item"].to_numpy(), table["y"].to_numpy()
    all_users, starts, counts = group_by_user(user_col)
    where = np.searchsorted(all_users, users)
    n_tasks, n = len(where), shots + queries
    rows = np.empty((n_tasks, n), dtype=np.int64)
    for t, w in enumerate(where):
        rows[t] = starts[w] + generator.permutation(counts[w])[:n]
    flat = rows.reshape(-1)
    role = np.tile(np.array([ROLES[0]] * shots + [ROLES[1]] * queries), n_tasks)
    return pl.DataFrame(
        {
            "task": np.repeat(np.arange(first_task, first_task + n_tasks, dtype=np.int64), n),
            "role": role.tolist(),
            "item": items[flat].astype(np.int64),
            "target": ys[flat].astype(np.float64),
            "user": user_col[flat].astype(np.int64),
        },
        schema={
            "task": pl.Int64,
            "role": pl.String,
            "item": pl.Int64,
            "target": pl.Float64,
            "user": pl.Int64,
        },
    )


def all_users_tasks(
    table: pl.DataFrame,
    users: np.ndarray,
    protocol: pl.DataFrame,
    shots: int,
    queries: int,
    generator: np.random.Generator,
) -> pl.DataFrame:
    """The ``protocol`` tasks as they are, then one for each other of the ``users`` by id: every
    user is scored, and the protocol's numbers stay those of its first tasks."""
    rest = np.setdiff1d(users, protocol["user"].unique().to_numpy())
    first = protocol["task"].n_unique()
    return pl.concat([protocol, user_tasks(table, rest, shots, queries, generator, first)])


# ------------------------------------------------------------------------------------ features


def top_right_singular(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors (columns) of ``matrix``
    ``[m, n]``, exact, from ``torch.linalg.eigh`` of the smaller Gram matrix in float64: about
    5x faster than ``torch.linalg.svd`` on ML-1M's 2,400 x 3,600 meta-train matrix. Values below
    ``RANK_RTOL * s[0]`` are not resolved (the Gram matrix squares the condition number): they
    count as zero and their vectors are zero."""
    a = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
    m, n = a.shape
    wide = m < n
    evals, evecs = torch.linalg.eigh(a @ a.T if wide else a.T @ a)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    s = evals.sqrt()
    if wide:  # evecs are the left vectors U: V = A^T U / s
        keep = s > s[0] * RANK_RTOL
        v = torch.zeros(n, m, dtype=torch.float64)
        v[:, keep] = (a.T @ evecs[:, keep]) / s[keep]
    else:
        v = evecs
    return s.numpy(), v.numpy()


def svd_item_embedding(
    user: np.ndarray, item: np.ndarray, y: np.ndarray, n_items: int, dim: int, key: str
) -> np.ndarray:
    """Item embeddings ``[n_items, dim]`` (float32) from the ratings ``(user, item, y)`` that
    are given, which must be the meta-train users' only (see the module docstring): the SVD of
    the user-mean-centred rating matrix over the rated items, ``V[:, :dim] * s[:dim]`` with
    deterministic signs, standardized per dimension over those items; unrated items get zeros.
    ``key`` names the parameter in the rank error (``data.<dataset>.embedding_dim``)."""
    rows, user_idx = np.unique(user, return_inverse=True)
    seen, item_idx = np.unique(item, return_inverse=True)
    m, n = len(rows), len(seen)
    y = np.asarray(y, dtype=np.float64)
    mean = np.bincount(user_idx, weights=y, minlength=m) / np.bincount(user_idx, minlength=m)
    matrix = np.zeros((m, n), dtype=np.float64)
    matrix[user_idx, item_idx] = y - mean[user_idx]
    if dim > min(m, n):
        raise DataError(
            f"{key} = {dim} exceeds the rank available: the meta-train rating matrix is {m} "
            f"users x {n} items (rank <= {min(m, n)}); lower {key}"
        )
    s, v = top_right_singular(matrix)
    rank = int((s > s[0] * RANK_RTOL).sum())
    if dim > rank:
        raise DataError(
            f"{key} = {dim} exceeds the rank {rank} of the meta-train rating matrix ({m} users x "
            f"{n} items, centred by user means); lower {key}"
        )
    v = v[:, :dim]
    peak = np.abs(v).argmax(axis=0)
    v = v * np.sign(v[peak, np.arange(dim)])  # largest-magnitude entry positive
    emb = v * s[:dim]
    std = emb.std(axis=0)
    emb = (emb - emb.mean(axis=0)) / np.where(std > 0, std, 1.0)
    out = np.zeros((n_items, dim), dtype=np.float32)
    out[seen] = emb
    return out


# ----------------------------------------------------------------------------------- episodify


def jester_parts(section: Any) -> list[int]:
    """The Jester parts to read: those downloaded (``data.jester.download.parts``)."""
    return [int(p) for p in section.download.parts]


def _most_ratings(counts: pl.DataFrame, users: np.ndarray, n_tasks: int) -> int:
    """The most ratings a task may need so that ``n_tasks`` of ``users`` have enough."""
    have = np.sort(counts.filter(pl.col("user").is_in(users))["len"].to_numpy())[::-1]
    return int(have[n_tasks - 1]) if len(have) >= n_tasks else 0


def episodify(section: Any, dataset: str, setting: str, raw: Path, out: Path) -> dict[str, Any]:
    name = f"{dataset}-{setting}"
    shots = section.settings[setting].shots
    queries = section.settings[setting].queries
    need = shots + queries
    parts = jester_parts(section) if dataset == "jester" else []
    raw_table = read_ratings(dataset, Path(raw), parts=parts)

    # items: Jester's 100 jokes as they are; MovieLens ids -> dense rows 0..n_items-1
    if dataset == "jester":
        item_ids = np.arange(JESTER_JOKES, dtype=np.int64)
        table = raw_table
    else:
        item_ids = np.unique(raw_table["item"].to_numpy()).astype(np.int64)
        table = raw_table.with_columns(
            item=pl.Series(np.searchsorted(item_ids, raw_table["item"].to_numpy()), dtype=pl.Int64)
        )
    table = table.select("user", "item", y=scale(pl.col("rating"), dataset).cast(pl.Float64)).sort(
        ["user", "item"]
    )

    splits = split_users(
        table["user"].unique().to_numpy(), section.users.val, section.users.test, section.seed
    )
    split_of = pl.DataFrame(
        {
            "user": np.concatenate([splits[s] for s in SPLITS]),
            "split": np.repeat(list(SPLITS), [len(splits[s]) for s in SPLITS]).tolist(),
        },
        schema={"user": pl.Int64, "split": pl.String},
    )
    table = table.join(split_of, on="user", how="left", maintain_order="left")

    counts = table.group_by("user").len()
    eligible = {}
    for split in SPLITS:
        ok = counts.filter((pl.col("len") >= need) & pl.col("user").is_in(splits[split]))
        eligible[split] = np.sort(ok["user"].to_numpy())
    if len(eligible["train"]) == 0:
        raise DataError(
            f"{name}: no meta-train user has >= {need} ratings (shots + queries); lower "
            f"data.{dataset}.settings.{setting}.shots or .queries"
        )
    wanted = {"val": section.val_tasks, "test": section.test_tasks}
    for split, n_tasks in wanted.items():
        if len(eligible[split]) < n_tasks:
            at = f"data.{dataset}.settings.{setting}"
            raise DataError(
                f"{name}: a task needs {need} ratings of one user ({at}.shots = {shots} "
                f"+ .queries = {queries}), and only {len(eligible[split])} "
                f"{SPLIT_NAMES[split]} users have that many, for data.{dataset}.{split}_tasks = "
                f"{n_tasks} tasks: lower {at}.shots or .queries (at most "
                f"{_most_ratings(counts, splits[split], n_tasks)} together here), or lower "
                f"data.{dataset}.{split}_tasks, or raise data.{dataset}.users.{split}"
            )

    if dataset == "jester":
        features = np.eye(JESTER_JOKES, dtype=np.float32)
        feature_kind = "one-hot"
    else:
        train = table.filter(pl.col("split") == "train")
        features = svd_item_embedding(
            train["user"].to_numpy(),
            train["item"].to_numpy(),
            train["y"].to_numpy(),
            len(item_ids),
            section.embedding_dim,
            f"data.{dataset}.embedding_dim",
        )
        feature_kind = "svd"

    streams = {"val": STREAM_VAL, "test": STREAM_TEST, ALL_USERS: STREAM_TEST_ALL}
    draw = {name: rng(section.seed, stream) for name, stream in streams.items()}
    held_out = {split: table.filter(pl.col("split") == split) for split in wanted}
    fixed = {
        split: sample_fixed_tasks(held_out[split], eligible[split], n, shots, queries, draw[split])
        for split, n in wanted.items()
    }
    fixed[ALL_USERS] = all_users_tasks(
        held_out["test"], eligible["test"], fixed["test"], shots, queries, draw[ALL_USERS]
    )
    for name, tasks in fixed.items():
        tasks.write_parquet(out / f"{name}.parquet")
    table.write_parquet(out / RATINGS)
    np.save(out / ITEMS, features, allow_pickle=False)
    np.save(out / ITEM_IDS, item_ids, allow_pickle=False)

    lo, hi = RATING_RANGE[dataset]
    meta: dict[str, Any] = {
        "kind": "regression",
        "shots": shots,
        "queries": queries,
        "in_dim": int(features.shape[1]),
        "rating_range": [lo, hi],
        "features": feature_kind,
        "seed": section.seed,
        "users_fraction": {"val": section.users.val, "test": section.users.test},
        "tasks": {
            "val": section.val_tasks,
            "test": section.test_tasks,
            ALL_USERS: fixed[ALL_USERS]["task"].n_unique(),
        },
        "counts": {
            "ratings": table.height,
            "items": len(item_ids),
            "items_rated_in_train": int(
                table.filter(pl.col("split") == "train")["item"].n_unique()
            ),
            "users": {split: len(splits[split]) for split in SPLITS},
            "eligible_users": {split: len(eligible[split]) for split in SPLITS},
        },
    }
    if dataset == "jester":
        meta["parts"] = parts
    else:
        meta["embedding_dim"] = section.embedding_dim
    return meta


# -------------------------------------------------------------------------------------- loader


class RatingSource:
    """The tasks of a rating benchmark directory (see the module docstring).

    A task's inputs are item ids (``int64``, rows of ``items.npy``); the models look up the
    item features themselves (:mod:`metalearn.models`), so a factor model can also keep learned
    per-item tables. ``train_ratings`` gives every meta-train rating, for the classical baseline.
    """

    architecture: Literal["ratings"] = "ratings"
    loss_kind: Literal["mse"] = "mse"

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), meta
        self.shots, self.queries = int(meta["shots"]), int(meta["queries"])
        self.features = torch.from_numpy(np.load(self.path / ITEMS, allow_pickle=False)).float()
        self.in_dim, self.out_dim = int(self.features.shape[1]), 1
        self.n_items = int(self.features.shape[0])
        train = (
            pl.read_parquet(self.path / RATINGS, columns=["user", "item", "y", "split"])
            .filter(pl.col("split") == "train")
            .sort("user", maintain_order=True)
        )
        # CSR-style grouping, once: user i's ratings are rows start[i] .. start[i] + count[i]
        _, starts, counts = group_by_user(train["user"].to_numpy())
        ok = counts >= self.shots + self.queries
        if not ok.any():
            raise DataError(
                f"{self.path}: no meta-train user has >= {self.shots + self.queries} ratings"
            )
        self._item = torch.from_numpy(train["item"].to_numpy().astype(np.int64))
        self._y = torch.from_numpy(train["y"].to_numpy().astype(np.float32))
        self._start = torch.from_numpy(starts[ok].astype(np.int64))
        self._count = torch.from_numpy(counts[ok].astype(np.int64))
        self._fixed: dict[str, tuple[Batch, Batch]] = {}

    @property
    def mean_rating(self) -> float:
        """The mean meta-train rating on the [0, 1] scale (the rating models' starting point)."""
        return float(self._y.double().mean())

    def train_ratings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every meta-train user's ratings: item ids ``[n]`` and ratings ``[n]`` on [0, 1]."""
        return self._item, self._y

    @property
    def all_users_split(self) -> str | None:
        """``"test_all"``: the tasks of every eligible meta-test user; ``None`` for episodes
        written before they were (no ``tasks.test_all`` in meta.json)."""
        return ALL_USERS if ALL_USERS in self.meta.get("tasks", {}) else None

    @property
    def n_train_users(self) -> int:
        """How many eligible meta-train users ``sample_train`` draws from."""
        return len(self._start)

    def _tasks(self, rows: torch.Tensor) -> tuple[Batch, Batch]:
        x, y = self._item[rows], self._y[rows]
        s = self.shots
        return (x[:, :s], y[:, :s]), (x[:, s:], y[:, s:])

    def sample_train(self, n_tasks: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        pick = torch.randint(len(self._start), (n_tasks,), generator=generator)
        count = self._count[pick]
        width = int(count.max())
        keys = torch.rand(n_tasks, width, generator=generator)
        keys.masked_fill_(torch.arange(width) >= count[:, None], 2.0)  # past a user's ratings
        order = keys.argsort(dim=1)[:, : self.shots + self.queries]  # a random subset, shuffled
        return self._tasks(self._start[pick, None] + order)

    def fixed_tasks(self, split: Literal["val", "test", "test_all"]) -> tuple[Batch, Batch]:
        if split not in self._fixed:
            self._fixed[split] = self._read_fixed(split)
        return self._fixed[split]

    def _read_fixed(self, split: str) -> tuple[Batch, Batch]:
        path = self.path / f"{split}.parquet"
        df = pl.read_parquet(path, columns=["task", "role", "item", "target"])
        tasks = df["task"].unique().sort()
        n_tasks = len(tasks)
        if n_tasks == 0 or not tasks.equals(pl.Series("task", range(n_tasks), dtype=pl.Int64)):
            raise DataError(f"{path}: tasks must be numbered 0 .. n - 1 (found {n_tasks} ids)")
        if not df["role"].is_in(ROLES).all():
            raise DataError(f"{path}: roles must be {' or '.join(ROLES)}")
        out = []
        for role, n in zip(ROLES, (self.shots, self.queries), strict=True):
            part = df.filter(pl.col("role") == role).sort("task", maintain_order=True)
            per_task = part.group_by("task").len()
            if per_task.height != n_tasks or (per_task["len"] != n).any():
                raise DataError(f"{path}: every task must have {n} {role} rows")
            item = torch.from_numpy(part["item"].to_numpy().astype(np.int64)).view(n_tasks, n)
            y = torch.from_numpy(part["target"].to_numpy().astype(np.float32)).view(n_tasks, n)
            out.append((item, y))
        return out[0], out[1]


register("jester", "movielens100k", "movielens1m")((episodify, RatingSource))
