"""N-way K-shot episodes of Omniglot and MiniImageNet (the MAML paper's protocol).

A task picks ``ways`` classes of one split and, per class, ``shots`` support and ``queries``
query images, all distinct. Labels ``0..ways-1`` go to the picked classes in a random order, and
the rows of the support set and of the query set are shuffled, per task.

Splits
    * Omniglot: all characters of ``images_background.zip`` and ``images_evaluation.zip``
      together (1,623 officially), split at random (``data.omniglot.seed``) into
      ``classes.train / val / test`` characters (MAML: 1,100 / 100 / 423). With ``rotations``
      each meta-train character also gives three more classes, the character rotated by 90,
      180 and 270 degrees counterclockwise (``torch.rot90``); meta-val/test are never rotated.
      As in the MAML reference code a task holds ``ways`` distinct characters, each in one
      rotation drawn uniformly: two rotations of one character never meet in a task (they
      would share drawings), and each of the 4x classes is equally likely.
      Images are ``image_size``-square, one channel, 1.0 = ink and 0.0 = background (no
      further normalisation: ``normalization`` is the identity).
    * MiniImageNet: the files' own 64 / 16 / 20 class split (Ravi & Larochelle); 84 x 84 RGB,
      ``x = (pixel / 255 - mean[c]) / std[c]`` with the per-channel mean and std of all
      meta-train images (``normalization`` in ``meta.json``).

Files of a benchmark directory
    * ``images_{train,val,test}.npy``: uint8, Omniglot ``[N, S, S]``, MiniImageNet
      ``[N, 84, 84, 3]``; a split's images, grouped by class;
    * ``classes.parquet``: one row per episode class: ``class`` (base class id: Omniglot
      character / MiniImageNet wnid, numbered over all splits), ``split``, ``name``,
      ``rotation`` (quarter turns 0..3), ``start`` and ``count`` (its rows in the split's file);
    * ``val.parquet`` / ``test.parquet``: the fixed tasks, one row per image: ``task``,
      ``role`` ("support" | "query"), ``image`` (row of ``images_{split}.npy``), ``rotation``,
      ``label``, ``class``; ordered by task, support before query. ``val_tasks`` /
      ``test_tasks`` tasks drawn with seeds ``seed + 1`` / ``seed + 2``, the same for every
      learner.

Meta-train tasks are sampled on the fly by :class:`ImageSource` with the caller's generator only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl
import torch
from torch import Tensor

from metalearn.data import images as raw_images
from metalearn.data.episodes import Batch, register
from metalearn.errors import DataError

CLASSES = "classes.parquet"
SPLITS = ("train", "val", "test")
ROLES = ("support", "query")
_SPLIT_WORDS = {"train": "meta-train", "val": "meta-val", "test": "meta-test"}


# ---------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class ClassTable:
    """The episode classes of one split: class ``i`` is base class ``base[i]`` rotated by
    ``rotation[i]`` quarter turns, with images ``start[i] : start[i] + count[i]`` (all int64).
    ``members[g, :n_members[g]]`` are the classes of the ``g``-th base class (its rotations)."""

    base: Tensor
    rotation: Tensor
    start: Tensor
    count: Tensor
    members: Tensor
    n_members: Tensor

    def __len__(self) -> int:
        return int(self.base.shape[0])

    @property
    def n_base(self) -> int:
        return int(self.n_members.shape[0])

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> ClassTable:
        def col(name: str) -> Tensor:
            return torch.from_numpy(frame[name].to_numpy().astype(np.int64, copy=True))

        base = col("class")
        groups, inverse, n_members = torch.unique(base, return_inverse=True, return_counts=True)
        width = int(n_members.max()) if len(groups) else 1
        members = torch.full((len(groups), width), -1, dtype=torch.int64)
        order = torch.argsort(inverse, stable=True)  # table rows grouped by base class
        first = torch.cumsum(n_members, 0) - n_members
        members[inverse[order], torch.arange(len(base)) - first[inverse[order]]] = order
        return cls(base, col("rotation"), col("start"), col("count"), members, n_members)


class Episodes(NamedTuple):
    """One role (support or query) of a batch of tasks, each field ``[n_tasks, m]`` int64:
    ``image`` rows of the split's image array, their ``rotation``, ``label`` and base ``klass``."""

    image: Tensor
    rotation: Tensor
    label: Tensor
    klass: Tensor


def sample_episodes(
    table: ClassTable,
    n_tasks: int,
    ways: int,
    shots: int,
    queries: int,
    generator: torch.Generator,
) -> tuple[Episodes, Episodes]:
    """``n_tasks`` tasks from ``table`` (support, query), drawn from ``generator`` only.

    Vectorised: a task's base classes are the first ``ways`` of a random permutation of the
    table's base classes (so the label order is random), each then one of its rotations
    uniformly (as the MAML reference: a task never holds two rotations of one character, and
    each of the 4x classes is equally likely); the images of a class are the first
    ``shots + queries`` of a random permutation of its images (so support and query are
    disjoint); the rows of each role are then shuffled. Same generator state, same tasks.
    """
    n, k = int(n_tasks), int(shots) + int(queries)
    if table.n_base < ways:
        raise DataError(f"cannot sample {ways}-way tasks from {table.n_base} base classes")
    if n < 1:
        raise DataError(f"n_tasks must be >= 1, got {n_tasks}")
    device = generator.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=device).cpu()

    group = rand(n, table.n_base).argsort(dim=1, stable=True)[:, :ways]  # [n, ways]: label = col
    which = (rand(n, ways) * table.n_members[group]).long()  # a rotation of each, uniformly
    which = torch.minimum(which, table.n_members[group] - 1)  # rand < 1, but be safe
    pick = table.members[group, which]  # [n, ways] rows of the table
    count = table.count[pick]
    if bool((count < k).any()):
        raise DataError(f"a class has {int(count.min())} images, fewer than {k} = shots+queries")
    width = int(table.count.max())
    keys = rand(n, ways, width).masked_fill(torch.arange(width) >= count[..., None], 2.0)
    offset = keys.argsort(dim=-1, stable=True)[..., :k]  # distinct images per class
    image = table.start[pick][..., None] + offset  # [n, ways, k]
    fields = {
        "image": image,
        "rotation": table.rotation[pick][..., None].expand(n, ways, k),
        "label": torch.arange(ways)[None, :, None].expand(n, ways, k),
        "klass": table.base[pick][..., None].expand(n, ways, k),
    }
    roles = []
    for part, m in ((slice(0, shots), shots), (slice(shots, k), queries)):
        order = rand(n, ways * m).argsort(dim=1, stable=True)
        roles.append(
            Episodes(
                **{
                    name: value[..., part].reshape(n, ways * m).gather(1, order)
                    for name, value in fields.items()
                }
            )
        )
    return roles[0], roles[1]


def episodes_to_frame(support: Episodes, query: Episodes) -> pl.DataFrame:
    """Long table of a task batch (the ``val.parquet`` / ``test.parquet`` layout)."""
    frames = []
    for role, ep in zip(ROLES, (support, query), strict=True):
        n, m = ep.image.shape
        frames.append(
            pl.DataFrame(
                {
                    "task": torch.arange(n).repeat_interleave(m).numpy(),
                    "role": [role] * (n * m),
                    "image": ep.image.reshape(-1).numpy(),
                    "rotation": ep.rotation.reshape(-1).numpy(),
                    "label": ep.label.reshape(-1).numpy(),
                    "class": ep.klass.reshape(-1).numpy(),
                }
            ).with_columns(rank=pl.lit(ROLES.index(role)), pos=pl.int_range(pl.len()))
        )
    return pl.concat(frames).sort("task", "rank", "pos").drop("rank", "pos")


def frame_to_episodes(frame: pl.DataFrame, per_task: tuple[int, int]) -> tuple[Episodes, Episodes]:
    """Invert :func:`episodes_to_frame`; ``per_task`` = rows (support, query) of each task."""
    n = int(frame["task"].max()) + 1 if frame.height else 0
    roles = []
    for role, m in zip(ROLES, per_task, strict=True):
        part = frame.filter(pl.col("role") == role).sort("task", maintain_order=True)
        tasks = part["task"].to_numpy()
        ok = n > 0 and part.height == n * m
        if not ok or not (tasks.reshape(n, m) == np.arange(n)[:, None]).all():
            raise DataError(
                f"fixed tasks: expected tasks 0..{n - 1} with {m} {role} rows each, "
                f"got {part.height} {role} rows"
            )
        cols = [
            torch.from_numpy(part[name].to_numpy().astype(np.int64)).reshape(n, m)
            for name in ("image", "rotation", "label", "class")
        ]
        roles.append(Episodes(*cols))
    return roles[0], roles[1]


def rotate_quarters(x: Tensor, rotation: Tensor) -> Tensor:
    """``x [..., S, S]`` with each leading item turned ``rotation[...]`` x 90 degrees
    counterclockwise (``torch.rot90`` over the last two dimensions); vectorised per angle."""
    out = x.clone()
    for r in (1, 2, 3):
        mask = rotation == r
        if bool(mask.any()):
            out[mask] = torch.rot90(x[mask], r, dims=(-2, -1))
    return out


# ---------------------------------------------------------------------------------------- episodify


def _setting_error(dataset: str, setting: str, key: str, why: str, fix: str) -> DataError:
    return DataError(f"data.{dataset}.settings.{setting}.{key}: {why}; {fix}")


def _check_setting(
    dataset: str, setting: str, spec: Any, tables: dict[str, pl.DataFrame], where: dict[str, str]
) -> None:
    """Every split has >= ways classes, every class >= shots + queries images (meta-train:
    shots + train_queries)."""
    for split in SPLITS:
        table = tables[split]
        n_base = table["class"].n_unique()  # rotations of a character never share a task
        if n_base < spec.ways:
            raise _setting_error(
                dataset,
                setting,
                "ways",
                f"ways = {spec.ways} but the {_SPLIT_WORDS[split]} split has only "
                f"{n_base} classes ({where[split]})",
                f"lower ways to <= {n_base} or give the split more classes",
            )
        key, queries = "queries", spec.queries
        if split == "train" and spec.train_queries is not None:
            key, queries = "train_queries", spec.train_queries
        need = spec.shots + queries
        small = table.filter(pl.col("count") < need)
        if small.height:
            row = small.sort("count").row(0, named=True)
            raise _setting_error(
                dataset,
                setting,
                f"shots / {key}",
                f"shots + {key} = {spec.shots} + {queries} = {need} images per class, but "
                f"{small.height} {_SPLIT_WORDS[split]} classes have fewer (e.g. {row['name']}: "
                f"{row['count']} images)",
                f"lower shots or {key} to a sum <= {int(table['count'].min())}",
            )


def _class_frame(
    split: str, base: np.ndarray, names: list[str], start: np.ndarray, count: np.ndarray, rot: bool
) -> pl.DataFrame:
    quarters = 4 if rot else 1
    return pl.DataFrame(
        {
            "class": np.repeat(base.astype(np.int64), quarters),
            "split": [split] * (len(base) * quarters),
            "name": [name for name in names for _ in range(quarters)],
            "rotation": np.tile(np.arange(quarters, dtype=np.int64), len(base)),
            "start": np.repeat(start.astype(np.int64), quarters),
            "count": np.repeat(count.astype(np.int64), quarters),
        }
    )


def _write_omniglot(section: Any, raw: Path, out: Path) -> tuple[dict[str, pl.DataFrame], dict]:
    data = raw_images.read_omniglot(raw, section.image_size)
    sizes = {split: getattr(section.classes, split) for split in SPLITS}
    available = len(data.names)
    if sum(sizes.values()) > available:
        asked = " + ".join(str(v) for v in sizes.values())
        raise DataError(
            f"data.omniglot.classes asks for {asked} = {sum(sizes.values())} characters but the "
            f"archives in {raw} hold only {available}; lower data.omniglot.classes.train / val / "
            "test to a sum <= " + str(available)
        )
    perm = torch.randperm(available, generator=torch.Generator().manual_seed(section.seed))
    counts = data.counts
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    tables, n_images = {}, {}
    lo = 0
    for split in SPLITS:
        ids = np.sort(perm[lo : lo + sizes[split]].numpy())
        lo += sizes[split]
        rows = np.concatenate([np.arange(first[c], first[c] + counts[c]) for c in ids])
        np.save(out / f"images_{split}.npy", data.images[rows], allow_pickle=False)
        start = np.concatenate([[0], np.cumsum(counts[ids])[:-1]])
        rotate = section.rotations and split == "train"
        tables[split] = _class_frame(
            split, ids, [data.names[c] for c in ids], start, counts[ids], rotate
        )
        n_images[split] = len(rows)
    fields = {
        "image_size": section.image_size,
        "channels": 1,
        "rotations": section.rotations,
        "normalization": {"scale": 1.0, "mean": [0.0], "std": [1.0]},
        "images": n_images,
        "characters_available": available,
    }
    return tables, fields


def _write_miniimagenet(section: Any, raw: Path, out: Path) -> tuple[dict[str, pl.DataFrame], dict]:
    del section  # the class split is the files'
    splits = raw_images.convert_miniimagenet(raw, out)
    tables, n_images, offset = {}, {}, 0
    for split in SPLITS:
        s = splits[split]
        base = np.arange(offset, offset + len(s.names))
        offset += len(s.names)
        tables[split] = _class_frame(split, base, s.names, s.start, s.count, rot=False)
        n_images[split] = int(s.count.sum())
    train = np.load(out / splits["train"].file, mmap_mode="r", allow_pickle=False)
    mean, std = raw_images.channel_stats(train)
    del train
    if min(std) <= 0:
        raise DataError("MiniImageNet meta-train images have a constant channel (std 0)")
    fields = {
        "image_size": raw_images.MINIIMAGENET_SHAPE[0],
        "channels": raw_images.MINIIMAGENET_SHAPE[2],
        "rotations": False,
        "normalization": {"scale": 255.0, "mean": mean, "std": std},
        "images": n_images,
    }
    return tables, fields


def episodify(section: Any, dataset: str, setting: str, raw: Path, out: Path) -> dict[str, Any]:
    """Write a benchmark's images, classes and fixed tasks to ``out``; return meta.json fields."""
    spec = section.settings[setting]
    if dataset == "omniglot":
        tables, fields = _write_omniglot(section, Path(raw), out)
        where = {s: f"data.omniglot.classes.{s} = {getattr(section.classes, s)}" for s in SPLITS}
    elif dataset == "miniimagenet":
        tables, fields = _write_miniimagenet(section, Path(raw), out)
        where = {s: f"fixed by {raw_images.MINIIMAGENET_FILES[s]}" for s in SPLITS}
    else:
        raise DataError(f"image_tasks cannot episodify {dataset!r}")
    _check_setting(dataset, setting, spec, tables, where)
    pl.concat([tables[s] for s in SPLITS]).write_parquet(out / CLASSES)
    n_tasks = {"val": section.val_tasks, "test": section.test_tasks}
    for offset, split in ((1, "val"), (2, "test")):
        generator = torch.Generator().manual_seed(section.seed + offset)
        support, query = sample_episodes(
            ClassTable.from_frame(tables[split]),
            n_tasks[split],
            spec.ways,
            spec.shots,
            spec.queries,
            generator,
        )
        episodes_to_frame(support, query).write_parquet(out / f"{split}.parquet")
    n_images = fields.pop("images")
    return {
        "kind": "classification",
        "ways": spec.ways,
        "shots": spec.shots,
        "queries": spec.queries,
        # query images per class in meta-training (the MAML reference code uses K on Omniglot)
        "train_queries": spec.train_queries if spec.train_queries is not None else spec.queries,
        **fields,
        "counts": {
            "images": n_images,
            "classes": {s: tables[s].height for s in SPLITS},
            "base_classes": {s: tables[s]["class"].n_unique() for s in SPLITS},
            "tasks": n_tasks,
        },
        "seed": section.seed,
    }


# ------------------------------------------------------------------------------------------ loader


class ImageSource:
    """The :class:`~metalearn.data.episodes.TaskSource` of an image benchmark directory.

    Batches are ``x [n, m, C, S, S]`` float32 (normalised as ``meta["normalization"]`` says) and
    ``y [n, m]`` int64 labels in ``0..ways-1``, ``m = ways * shots`` (support) or
    ``ways * queries`` (query; ``ways * train_queries`` in meta-training). The uint8 images
    stay in memory (MiniImageNet: memory-mapped); only a batch's images are converted to float.
    """

    architecture: Literal["conv4"] = "conv4"
    loss_kind: Literal["cross_entropy"] = "cross_entropy"
    all_users_split: str | None = None  # only the rating benchmarks score every test user

    def __init__(self, path: str | Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), meta
        self.ways, self.shots, self.queries = meta["ways"], meta["shots"], meta["queries"]
        self.train_queries = meta.get("train_queries", self.queries)
        self.n_classes = self.ways
        self.in_channels = int(meta["channels"])
        self.image_size = int(meta["image_size"])
        norm = meta["normalization"]
        std = torch.tensor(norm["std"], dtype=torch.float32)
        self._scale = 1.0 / (norm["scale"] * std)
        self._shift = -torch.tensor(norm["mean"], dtype=torch.float32) / std
        self._identity = bool((self._scale == 1).all() and (self._shift == 0).all())
        classes = pl.read_parquet(self.path / CLASSES)
        self.classes = {s: classes.filter(pl.col("split") == s) for s in SPLITS}
        self.train_classes = ClassTable.from_frame(self.classes["train"])
        self._arrays: dict[str, np.ndarray] = {}
        self.images("train")  # load once now; val/test on first use

    def images(self, split: str) -> np.ndarray:
        """The uint8 images of ``split`` (loaded once; MiniImageNet memory-mapped)."""
        if split not in self._arrays:
            mmap = "r" if self.in_channels == 3 else None
            file = self.path / f"images_{split}.npy"
            array = np.load(file, mmap_mode=mmap, allow_pickle=False)
            if array.dtype != np.uint8 or array.shape[1:3] != (self.image_size,) * 2:
                raise DataError(
                    f"{file}: uint8 [N, {self.image_size}, {self.image_size}, ...] "
                    f"expected, got {array.dtype} {list(array.shape)}"
                )
            self._arrays[split] = array
        return self._arrays[split]

    def batch(self, split: str, episodes: Episodes) -> Batch:
        """``(x, y)`` of ``episodes`` drawn from ``split``'s images."""
        rows = episodes.image.numpy()
        u8 = torch.from_numpy(np.ascontiguousarray(self.images(split)[rows]))
        if self.in_channels == 1:  # [n, m, S, S] -> [n, m, 1, S, S]
            x = rotate_quarters(u8, episodes.rotation).unsqueeze(2).float()
            if not self._identity:
                x = torch.addcmul(self._shift[:, None, None], x, self._scale[:, None, None])
        else:  # [n, m, S, S, C] -> [n, m, C, S, S]; rotations are Omniglot-only
            u8 = u8.permute(0, 1, 4, 2, 3).contiguous()  # cheapest as uint8
            x = torch.addcmul(self._shift[:, None, None], u8, self._scale[:, None, None])
        return x, episodes.label.clone()

    def sample_train_episodes(
        self, n_tasks: int, generator: torch.Generator
    ) -> tuple[Episodes, Episodes]:
        """The indices behind :meth:`sample_train` (same generator use)."""
        return sample_episodes(
            self.train_classes, n_tasks, self.ways, self.shots, self.train_queries, generator
        )

    def sample_train(self, n_tasks: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        support, query = self.sample_train_episodes(n_tasks, generator)
        return self.batch("train", support), self.batch("train", query)

    def fixed_episodes(self, split: Literal["val", "test"]) -> tuple[Episodes, Episodes]:
        if split not in ("val", "test"):
            raise DataError(f"fixed tasks exist for 'val' and 'test', not {split!r}")
        frame = pl.read_parquet(self.path / f"{split}.parquet")
        return frame_to_episodes(frame, (self.ways * self.shots, self.ways * self.queries))

    def fixed_tasks(self, split: Literal["val", "test"]) -> tuple[Batch, Batch]:
        support, query = self.fixed_episodes(split)
        return self.batch(split, support), self.batch(split, query)


register("omniglot", "miniimagenet")((episodify, ImageSource))
