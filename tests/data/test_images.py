"""Omniglot / MiniImageNet: safe reading of the official files and N-way K-shot episodes.

Unit tests build tiny fixtures in the official formats under ``tmp_path`` (zips of 105 x 105
mode-"1" PNGs, pickled MiniImageNet dicts); the integration tests read the local mirror
(``/work/shared/datasets`` beside the checkout, or ``$METALEARN_TEST_MIRROR``) and are skipped
without it. Nothing touches the network.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from metalearn import fingerprint
from metalearn.config import (
    ClassSplit,
    FewShotSetting,
    MiniImageNetConfig,
    OmniglotConfig,
    load_config,
)
from metalearn.data import episodes
from metalearn.data import image_tasks as it
from metalearn.data import images as im
from metalearn.io import write_json
from metalearn.models import Conv4, init_params, make_loss

# ---------------------------------------------------------------------------------------- fixtures

BACKGROUND = {"Alpha": 4, "Beta": 4}  # alphabet -> characters
EVALUATION = {"Gamma": 4}
DRAWINGS = 6
N_CHARS = sum(BACKGROUND.values()) + sum(EVALUATION.values())  # 12


def png(white: np.ndarray) -> bytes:
    """A mode-"1" PNG like Omniglot's: True = white background, False = black ink."""
    buf = io.BytesIO()
    Image.fromarray(white.astype(bool)).save(buf, format="PNG")
    return buf.getvalue()


def drawing(seed: int, size: int = 105) -> np.ndarray:
    """A random 7 x 7 grid of 15-pixel blocks (unique per seed, survives resizing)."""
    blocks = np.random.default_rng(seed).random((7, 7)) < 0.7  # mostly white, like strokes
    return np.kron(blocks, np.ones((15, 15), dtype=bool))[:size, :size]


def write_omniglot_zip(path: Path, alphabets: dict[str, int], first_seed: int = 0) -> None:
    top = path.stem
    seed = first_seed
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", b"")
        for alphabet, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                for d in range(1, DRAWINGS + 1):
                    name = f"{top}/{alphabet}/character{c:02d}/{1000 + c:04d}_{d:02d}.png"
                    zf.writestr(name, png(drawing(seed)))
                    seed += 1


def write_miniimagenet_pickle(
    path: Path, n_classes: int, per_class: int, prefix: str, seed: int, protocol: int = 4
) -> dict:
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    images = rng.integers(0, 256, (n, 84, 84, 3), dtype=np.uint8)
    order = rng.permutation(n)  # classes not contiguous in the file
    class_dict = {
        f"n{prefix}{k:03d}": [int(i) for i in order[k * per_class : (k + 1) * per_class]]
        for k in range(n_classes)
    }
    data = {"image_data": images, "class_dict": class_dict}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data


@pytest.fixture(scope="module")
def omniglot_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("omniglot_raw")
    write_omniglot_zip(raw / "images_background.zip", BACKGROUND, first_seed=0)
    write_omniglot_zip(raw / "images_evaluation.zip", EVALUATION, first_seed=10_000)
    return raw


MINI_CLASSES = {"train": 5, "val": 3, "test": 3}
MINI_PER_CLASS = 6


@pytest.fixture(scope="module")
def mini_raw(tmp_path_factory) -> tuple[Path, dict]:
    raw = tmp_path_factory.mktemp("mini_raw")
    data = {}
    for i, (split, file) in enumerate(im.MINIIMAGENET_FILES.items()):
        data[split] = write_miniimagenet_pickle(
            raw / file, MINI_CLASSES[split], MINI_PER_CLASS, prefix=str(i), seed=i
        )
    return raw, data


@functools.cache
def params_sections() -> tuple[OmniglotConfig, MiniImageNetConfig]:
    """The params.yaml sections; tests replace the fields they need (keys added later stay)."""
    cfg = load_config()
    return cfg.data.omniglot, cfg.data.miniimagenet


def omniglot_section(
    train: int = 6, val: int = 3, test: int = 3, rotations: bool = True, seed: int = 0, **settings
) -> OmniglotConfig:
    settings = settings or {
        "way3shot1": FewShotSetting(ways=3, shots=1, queries=2, train_queries=None),
        "way3shot2": FewShotSetting(ways=3, shots=2, queries=3, train_queries=None),
    }
    return dataclasses.replace(
        params_sections()[0],
        seed=seed,
        image_size=28,
        classes=ClassSplit(train=train, val=val, test=test),
        rotations=rotations,
        val_tasks=7,
        test_tasks=9,
        settings=settings,
    )


def mini_section(**settings) -> MiniImageNetConfig:
    settings = settings or {
        "way3shot1": FewShotSetting(ways=3, shots=1, queries=2, train_queries=None)
    }
    return dataclasses.replace(
        params_sections()[1], seed=0, val_tasks=4, test_tasks=5, settings=settings
    )


def build(section, dataset: str, setting: str, raw: Path, out: Path) -> it.ImageSource:
    """episodify + meta.json + load through the registry, as the pipeline does."""
    out.mkdir(parents=True)
    meta = {"benchmark": f"{dataset}-{setting}", "dataset": dataset, "setting": setting}
    meta |= it.episodify(section, dataset, setting, raw, out)
    meta["files"] = fingerprint.fingerprints(out, skip=(episodes.META,))
    write_json(out / episodes.META, meta)
    source = episodes.load_episodes(out)
    assert isinstance(source, it.ImageSource)
    return source


@pytest.fixture(scope="module")
def omni(omniglot_raw, tmp_path_factory) -> it.ImageSource:
    out = tmp_path_factory.mktemp("omni") / "bench"
    return build(omniglot_section(), "omniglot", "way3shot2", omniglot_raw, out)


@pytest.fixture(scope="module")
def mini(mini_raw, tmp_path_factory) -> it.ImageSource:
    out = tmp_path_factory.mktemp("mini") / "bench"
    return build(mini_section(), "miniimagenet", "way3shot1", mini_raw[0], out)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- Omniglot reading


def test_resize_and_ink_convention(tmp_path):
    white = np.ones((105, 105), dtype=bool)
    white[:52, :52] = False  # black (ink) square, top left
    for name, data in {"mode1": png(white), "gray": None}.items():
        if data is None:  # a greyscale PNG is made binary first (>= 128 is background)
            buf = io.BytesIO()
            Image.fromarray(np.where(white, 250, 5).astype(np.uint8)).save(buf, format="PNG")
            data = buf.getvalue()
        archive = tmp_path / name / "images_background.zip"
        archive.parent.mkdir()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("images_background/Alpha/character01/0001_01.png", data)
        got = im.read_omniglot(archive.parent, image_size=28, archives=("images_background.zip",))
        x = got.images[0]
        assert got.images.shape == (1, 28, 28) and got.images.dtype == np.uint8
        assert set(np.unique(x)) == {0, 1}
        assert (x[:13, :13] == 1).all() and (x[14:, 14:] == 0).all()  # 1 = ink
        reference = Image.open(io.BytesIO(png(white))).resize((28, 28), Image.Resampling.LANCZOS)
        np.testing.assert_array_equal(x, 1 - np.asarray(reference, dtype=np.uint8))


def test_read_omniglot_counts_names_and_order(omniglot_raw):
    data = im.read_omniglot(omniglot_raw)
    assert data.images.shape == (N_CHARS * DRAWINGS, 28, 28) and data.images.dtype == np.uint8
    assert data.names == sorted(data.names) and len(data.names) == N_CHARS
    assert data.names[0] == "Alpha/character01" and data.names[-1] == "Gamma/character04"
    np.testing.assert_array_equal(data.counts, DRAWINGS)
    assert (np.diff(data.character) >= 0).all()  # grouped by class
    # the first drawing of Gamma/character01 (evaluation archive, seed 10000)
    row = data.names.index("Gamma/character01") * DRAWINGS
    expected = Image.fromarray(drawing(10_000)).resize((28, 28), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(data.images[row], 1 - np.asarray(expected, dtype=np.uint8))
    again = im.read_omniglot(omniglot_raw)
    np.testing.assert_array_equal(again.images, data.images)


@pytest.mark.parametrize("bad", ["../evil.png", "/abs/evil.png", "images_background/../../x.png"])
def test_zip_with_unsafe_entry_is_refused(tmp_path, bad):
    archive = tmp_path / "images_background.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images_background/Alpha/character01/0001_01.png", png(drawing(0)))
        zf.writestr(zipfile.ZipInfo(bad), png(drawing(1)))
    with pytest.raises(im.ArchiveError, match="images_background.zip.*unsafe entry"):
        im.read_omniglot(tmp_path, archives=("images_background.zip",))


def test_corrupt_or_truncated_zip_names_the_archive(tmp_path, omniglot_raw):
    good = (omniglot_raw / "images_background.zip").read_bytes()
    truncated = tmp_path / "t" / "images_background.zip"
    truncated.parent.mkdir()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(im.ArchiveError, match=r"t/images_background.zip is corrupt or truncated"):
        im.read_omniglot(truncated.parent, archives=("images_background.zip",))
    # a damaged member (CRC error), central directory intact
    damaged = tmp_path / "d" / "images_background.zip"
    damaged.parent.mkdir()
    with zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("images_background/Alpha/character01/0001_01.png", png(drawing(0)))
    blob = bytearray(damaged.read_bytes())
    blob[60:70] = b"\xff" * 10  # inside the stored PNG bytes
    damaged.write_bytes(bytes(blob))
    with pytest.raises(im.ArchiveError, match="d/images_background.zip"):
        im.read_omniglot(damaged.parent, archives=("images_background.zip",))
    with pytest.raises(im.ArchiveError, match="not found"):
        im.read_omniglot(tmp_path / "nowhere")


def test_png_outside_the_official_layout_or_size_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        zf.writestr("images_background/Alpha/0001_01.png", png(drawing(0)))
    with pytest.raises(im.ArchiveError, match="official layout"):
        im.read_omniglot(tmp_path, archives=("images_background.zip",))
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:  # a tiny "bomb"
        zf.writestr("images_background/A/c01/1.png", png(np.ones((3000, 3000), dtype=bool)))
    with pytest.raises(im.ArchiveError, match="3000 x 3000 pixels"):
        im.read_omniglot(tmp_path, archives=("images_background.zip",))


# --------------------------------------------------------------------------------- Omniglot splits


def test_omniglot_split_sizes_disjoint_and_rotations(omni):
    classes = {s: omni.classes[s] for s in it.SPLITS}
    assert classes["train"].height == 4 * 6  # 6 characters x 4 rotations
    assert classes["val"].height == 3 and classes["test"].height == 3
    assert sorted(classes["train"]["rotation"].unique().to_list()) == [0, 1, 2, 3]
    assert classes["val"]["rotation"].to_list() == [0] * 3
    assert classes["test"]["rotation"].to_list() == [0] * 3
    base = {s: set(classes[s]["class"].to_list()) for s in it.SPLITS}
    assert [len(base[s]) for s in it.SPLITS] == [6, 3, 3]
    assert not base["train"] & base["val"] and not base["train"] & base["test"]
    assert not base["val"] & base["test"]
    names = {s: set(classes[s]["name"].to_list()) for s in it.SPLITS}
    assert not names["train"] & (names["val"] | names["test"])
    meta = omni.meta
    assert meta["counts"]["classes"] == {"train": 24, "val": 3, "test": 3}
    assert meta["counts"]["images"] == {"train": 36, "val": 18, "test": 18}
    assert (meta["kind"], meta["channels"], meta["image_size"]) == ("classification", 1, 28)
    train = omni.images("train")
    assert train.shape == (36, 28, 28) and train.dtype == np.uint8


def test_omniglot_split_is_seeded_and_rotations_optional(omniglot_raw, tmp_path):
    def split(seed: int, rotations: bool = True) -> dict[str, list[str]]:
        out = tmp_path / f"s{seed}{rotations}"
        out.mkdir(exist_ok=True)
        section = omniglot_section(seed=seed, rotations=rotations)
        it.episodify(section, "omniglot", "way3shot1", omniglot_raw, out)
        table = pl.read_parquet(out / it.CLASSES)
        return {s: table.filter(pl.col("split") == s)["name"].to_list() for s in it.SPLITS}

    assert split(0) == split(0)
    assert split(0) != split(1)
    plain = split(0, rotations=False)
    assert len(plain["train"]) == 6 and plain["train"] == sorted(set(split(0)["train"]))


def test_not_enough_characters_says_how_many(omniglot_raw, tmp_path):
    section = omniglot_section(train=10, val=2, test=3)
    with pytest.raises(ValueError, match=r"10 \+ 2 \+ 3 = 15 characters.*only 12") as e:
        it.episodify(section, "omniglot", "way3shot1", omniglot_raw, tmp_path)
    assert "data.omniglot.classes.train / val / test" in str(e.value)


def test_not_enough_classes_or_images_names_numbers_and_keys(omniglot_raw, tmp_path):
    section = omniglot_section(
        way4shot1=FewShotSetting(ways=4, shots=1, queries=1, train_queries=None),
        way2shot3=FewShotSetting(ways=2, shots=3, queries=4, train_queries=None),
    )
    with pytest.raises(ValueError, match=r"settings\.way4shot1\.ways.*ways = 4.*meta-val.*only 3"):
        it.episodify(section, "omniglot", "way4shot1", omniglot_raw, tmp_path)
    with pytest.raises(ValueError, match=r"way2shot3\.shots / queries.*3 \+ 4 = 7.*: 6 images"):
        it.episodify(section, "omniglot", "way2shot3", omniglot_raw, tmp_path)
    # rotated copies are not extra characters for a task: 3 characters x 4 < 4 ways
    section = omniglot_section(
        train=3,
        val=4,
        test=4,
        way4shot1=FewShotSetting(ways=4, shots=1, queries=1, train_queries=None),
    )
    with pytest.raises(ValueError, match=r"meta-train split has only 3 classes.*train = 3"):
        it.episodify(section, "omniglot", "way4shot1", omniglot_raw, tmp_path)


# ------------------------------------------------------------------------------------------- tasks


def check_task_invariants(support: it.Episodes, query: it.Episodes, ways, shots, queries):
    n = support.image.shape[0]
    assert support.image.shape == (n, ways * shots) and query.image.shape == (n, ways * queries)
    for t in range(n):
        s_classes, q_classes = {}, {}
        for ep, seen, per in ((support, s_classes, shots), (query, q_classes, queries)):
            labels = ep.label[t]
            assert torch.equal(torch.bincount(labels, minlength=ways), torch.full((ways,), per))
            for label in range(ways):
                pairs = {
                    (int(k), int(r))
                    for k, r in zip(
                        ep.klass[t][labels == label], ep.rotation[t][labels == label], strict=True
                    )
                }
                assert len(pairs) == 1  # one class per label
                seen[label] = pairs.pop()
        assert s_classes == q_classes and len(set(s_classes.values())) == ways
        assert len({k for k, _ in s_classes.values()}) == ways  # never 2 rotations of 1 class
        # support and query images are disjoint (same image rotated = same drawing: also apart)
        assert not set(support.image[t].tolist()) & set(query.image[t].tolist())
        assert len(set(support.image[t].tolist())) == ways * shots
        assert len(set(query.image[t].tolist())) == ways * queries


def test_train_task_invariants_and_determinism(omni):
    support, query = omni.sample_train_episodes(40, gen(0))
    check_task_invariants(support, query, 3, 2, 3)
    train_pairs = set(omni.classes["train"].select("class", "rotation").iter_rows())
    used = set(
        zip(support.klass.flatten().tolist(), support.rotation.flatten().tolist(), strict=True)
    )
    assert used <= train_pairs and {r for _, r in used} == {0, 1, 2, 3}
    # labels in a random order per task: label 0 is not always the smallest class
    first = support.klass[torch.arange(40), support.label.argmin(1)]
    assert not bool((first == support.klass.min(1).values).all())
    (xs, ys), (xq, yq) = omni.sample_train(40, gen(0))
    (xs2, ys2), (xq2, yq2) = omni.sample_train(40, gen(0))
    assert torch.equal(xs, xs2) and torch.equal(yq, yq2) and torch.equal(xq, xq2)
    assert torch.equal(ys, support.label) and torch.equal(yq, query.label)
    other, _ = omni.sample_train_episodes(40, gen(1))
    assert not torch.equal(other.image, support.image)


def test_batches_are_the_stored_images_rotated(omni):
    support, _ = omni.sample_train_episodes(8, gen(3))
    (x, y), _ = omni.sample_train(8, gen(3))
    assert x.shape == (8, 6, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    train = torch.from_numpy(omni.images("train"))
    for t in range(8):
        for j in range(6):
            img = train[support.image[t, j]]
            expected = torch.from_numpy(np.rot90(img.numpy(), int(support.rotation[t, j])).copy())
            assert torch.equal(x[t, j, 0], expected.float())


def test_fixed_tasks_come_from_their_split_and_are_reproducible(omni, omniglot_raw, tmp_path):
    for split, n in (("val", 7), ("test", 9)):
        support, query = omni.fixed_episodes(split)
        check_task_invariants(support, query, 3, 2, 3)
        assert support.image.shape[0] == n
        split_classes = set(omni.classes[split]["class"].to_list())
        assert set(support.klass.flatten().tolist()) <= split_classes
        assert set(query.klass.flatten().tolist()) <= split_classes
        assert int(support.rotation.abs().sum()) == 0
        (xs, ys), (xq, yq) = omni.fixed_tasks(split)
        assert xs.shape == (n, 6, 1, 28, 28) and xq.shape == (n, 9, 1, 28, 28)
        assert ys.shape == (n, 6) and yq.shape == (n, 9) and ys.dtype == torch.int64
        frame = pl.read_parquet(omni.path / f"{split}.parquet")
        assert frame.columns == ["task", "role", "image", "rotation", "label", "class"]
    # a second episodify writes identical fixed tasks
    again = tmp_path / "again"
    again.mkdir()
    it.episodify(omniglot_section(), "omniglot", "way3shot2", omniglot_raw, again)
    for file in ("val.parquet", "test.parquet", it.CLASSES):
        assert pl.read_parquet(again / file).equals(pl.read_parquet(omni.path / file))
    np.testing.assert_array_equal(np.load(again / "images_test.npy"), omni.images("test"))


def test_rotate_quarters_is_counterclockwise():
    x = torch.arange(2 * 3 * 3).reshape(2, 3, 3)
    out = it.rotate_quarters(x, torch.tensor([1, 3]))
    assert torch.equal(out[0], torch.from_numpy(np.rot90(x[0].numpy(), 1).copy()))
    assert torch.equal(out[1], torch.from_numpy(np.rot90(x[1].numpy(), 3).copy()))
    assert torch.equal(it.rotate_quarters(x, torch.tensor([0, 0])), x)


# ------------------------------------------------------------------------------------ MiniImageNet


def test_miniimagenet_split_grouping_and_normalisation(mini, mini_raw):
    _, data = mini_raw
    assert mini.meta["counts"]["classes"] == MINI_CLASSES
    assert mini.meta["counts"]["images"] == {s: n * MINI_PER_CLASS for s, n in MINI_CLASSES.items()}
    assert (mini.in_channels, mini.image_size, mini.n_classes) == (3, 84, 3)
    for split in it.SPLITS:
        table = mini.classes[split]
        assert table["name"].to_list() == sorted(data[split]["class_dict"])
        stored = mini.images(split)
        assert isinstance(stored, np.memmap) and stored.dtype == np.uint8
        for row in table.iter_rows(named=True):
            rows = data[split]["class_dict"][row["name"]]
            block = stored[row["start"] : row["start"] + row["count"]]
            np.testing.assert_array_equal(block, data[split]["image_data"][rows])
    pixels = data["train"]["image_data"].reshape(-1, 3) / 255.0
    norm = mini.meta["normalization"]
    np.testing.assert_allclose(norm["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(norm["std"], pixels.std(0), rtol=1e-9)
    support, query = mini.sample_train_episodes(6, gen(0))
    check_task_invariants(support, query, 3, 1, 2)
    (xs, ys), (xq, yq) = mini.sample_train(6, gen(0))
    assert xs.shape == (6, 3, 3, 84, 84) and xq.shape == (6, 6, 3, 84, 84)
    assert xs.dtype == torch.float32 and ys.dtype == torch.int64
    raw = torch.from_numpy(np.array(mini.images("train")[int(support.image[2, 1])])).double()
    expected = (raw / 255 - torch.tensor(norm["mean"])) / torch.tensor(norm["std"])
    torch.testing.assert_close(xs[2, 1].double(), expected.permute(2, 0, 1), atol=1e-5, rtol=0)
    (fs, _), (fq, _) = mini.fixed_tasks("test")
    assert fs.shape == (5, 3, 3, 84, 84) and fq.shape == (5, 6, 3, 84, 84)
    val_classes = set(mini.classes["val"]["class"].to_list())
    assert set(mini.fixed_episodes("val")[1].klass.flatten().tolist()) <= val_classes


def test_miniimagenet_setting_too_big(mini_raw, tmp_path):
    section = mini_section(
        way4shot1=FewShotSetting(ways=4, shots=1, queries=1, train_queries=None),
        way2shot5=FewShotSetting(ways=2, shots=5, queries=2, train_queries=None),
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"ways = 4.*meta-val.*only 3.*validation.pkl"):
        it.episodify(section, "miniimagenet", "way4shot1", mini_raw[0], tmp_path / "a")
    with pytest.raises(ValueError, match=r"5 \+ 2 = 7.*6 images"):
        it.episodify(section, "miniimagenet", "way2shot5", mini_raw[0], tmp_path / "b")


def test_train_queries_size_meta_training_tasks_only(mini_raw, tmp_path):
    """MAML's reference code samples K query images per class in meta-training; the fixed
    meta-test tasks keep ``queries``."""
    section = mini_section(
        way2shot1=FewShotSetting(ways=2, shots=1, queries=4, train_queries=1),
        way2shot2=FewShotSetting(ways=2, shots=2, queries=1, train_queries=5),
    )
    source = build(section, "miniimagenet", "way2shot1", mini_raw[0], tmp_path / "a")
    (xs, _), (xq, _) = source.sample_train(3, gen(0))
    assert xs.shape[1] == 2 and xq.shape[1] == 2 * 1
    assert source.fixed_tasks("test")[1][0].shape[1] == 2 * 4
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"train_queries = 2 \+ 5 = 7.*6 images"):
        it.episodify(section, "miniimagenet", "way2shot2", mini_raw[0], tmp_path / "b")


def test_old_numpy_module_names_load(tmp_path):
    data = {"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"n1": [0, 1]}}
    blob = pickle.dumps(data, protocol=2)  # GLOBAL opcodes: plain text module names
    current = b"numpy._core.multiarray" if b"numpy._core" in blob else b"numpy.core.multiarray"
    for name in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        path = tmp_path / "x.pkl"
        path.write_bytes(blob.replace(current, name))
        images, classes = im.validate_miniimagenet(im.load_pickle(path), str(path))
        assert images.shape == (2, 84, 84, 3) and classes["n1"].tolist() == [0, 1]
    # protocol 2 spells bytes as _codecs.encode(text, "latin1"): admitted for latin1 only
    assert b"_codecs" in blob
    path.write_bytes(blob.replace(b"latin1", b"rot_13"))
    with pytest.raises(im.UnsafePickleError, match="x.pkl: .*latin1"):
        im.load_pickle(path)


class Payload:
    """Pickles as a call of ``func(*args)``: what a malicious 'dataset' would carry."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("where", ["top", "image_data", "class_dict"])
def test_pickle_with_a_callable_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = Payload(os.system, f"touch {marker}")
    data = {"image_data": np.zeros((1, 84, 84, 3), np.uint8), "class_dict": {"n1": [0]}}
    if where == "top":
        data = evil
    elif where == "image_data":
        data["image_data"] = evil
    else:
        data["class_dict"]["n1"] = [evil]
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(im.UnsafePickleError, match=r"mini-imagenet-cache-train.pkl.*\.system"):
        im.load_pickle(path)
    assert not marker.exists()
    assert isinstance(im.UnsafePickleError("x"), ValueError)


def test_pickle_with_eval_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Payload(eval, "__import__('os').getcwd()")))
    with pytest.raises(im.UnsafePickleError, match="builtins.eval"):
        im.load_pickle(path)


def test_episodify_refuses_an_unsafe_miniimagenet_file(mini_raw, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for file in im.MINIIMAGENET_FILES.values():
        (raw / file).write_bytes((mini_raw[0] / file).read_bytes())
    marker = tmp_path / "pwned"
    (raw / im.MINIIMAGENET_FILES["test"]).write_bytes(
        pickle.dumps({"image_data": Payload(os.system, f"touch {marker}"), "class_dict": {}})
    )
    (tmp_path / "out").mkdir()
    with pytest.raises(im.UnsafePickleError, match="mini-imagenet-cache-test.pkl"):
        it.episodify(mini_section(), "miniimagenet", "way3shot1", raw, tmp_path / "out")
    assert not marker.exists()


GOOD = {"image_data": np.zeros((3, 84, 84, 3), np.uint8), "class_dict": {"n1": [0, 1], "n2": [2]}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2, 3], "not a dict"),
        ({"image_data": GOOD["image_data"]}, r"missing key\(s\) \['class_dict'\]"),
        ({**GOOD, "image_data": np.zeros((3, 84, 84, 3), np.float32)}, "not a uint8 array"),
        ({**GOOD, "image_data": np.zeros((3, 32, 32, 3), np.uint8)}, r"shape \[3, 32, 32, 3\]"),
        ({**GOOD, "image_data": "pixels"}, "str, not a uint8 array"),
        ({**GOOD, "class_dict": {"n1": [0, 3]}}, r"outside \[0, 3\)"),
        ({**GOOD, "class_dict": {"n1": [0, -1]}}, "outside"),
        ({**GOOD, "class_dict": {"n1": ["0"]}}, "must be integers"),
        ({**GOOD, "class_dict": {"n1": []}}, "non-empty list"),
        ({**GOOD, "class_dict": {"n1": [0], "n2": [0]}}, "more than once"),
        ({**GOOD, "class_dict": []}, "class_dict is not a non-empty dict"),
    ],
)
def test_wrong_structure_is_a_clear_error(tmp_path, data, message):
    path = tmp_path / "mini-imagenet-cache-val.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(im.PickleFormatError, match=message) as e:
        im.validate_miniimagenet(im.load_pickle(path), str(path))
    assert "mini-imagenet-cache-val.pkl" in str(e.value) and "expected a dict" in str(e.value)


def test_truncated_pickle_and_classes_in_two_splits(tmp_path, mini_raw):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(GOOD)[:1000])
    with pytest.raises(im.PickleFormatError, match="cut.pkl is not a readable pickle"):
        im.load_pickle(path)
    raw = tmp_path / "raw"
    raw.mkdir()
    for file in im.MINIIMAGENET_FILES.values():
        (raw / file).write_bytes((mini_raw[0] / file).read_bytes())
    (raw / im.MINIIMAGENET_FILES["test"]).write_bytes(
        (mini_raw[0] / im.MINIIMAGENET_FILES["val"]).read_bytes()
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(im.PickleFormatError, match="in both mini-imagenet-cache-validation.pkl"):
        im.convert_miniimagenet(raw, out)


# ---------------------------------------------------------------------------------- model and API


@pytest.mark.parametrize("name", ["omni", "mini"])
def test_conv4_loss_and_vmap_over_a_sampled_batch(name, request):
    source = request.getfixturevalue(name)
    assert (source.architecture, source.loss_kind) == ("conv4", "cross_entropy")
    model = Conv4(source.in_channels, source.n_classes, filters=8, image_size=source.image_size)
    params = init_params(model, gen(0))
    loss_fn = make_loss(model, source.loss_kind)
    support, query = source.sample_train(2, gen(0))
    losses = torch.func.vmap(loss_fn, in_dims=(None, 0))(params, support)
    assert losses.shape == (2,) and bool(torch.isfinite(losses).all())
    one = loss_fn(params, (support[0][1], support[1][1]))
    torch.testing.assert_close(losses[1], one, rtol=1e-4, atol=1e-5)
    grads = torch.func.vmap(torch.func.grad(loss_fn), in_dims=(None, 0))(params, query)
    assert all(bool(torch.isfinite(g).all()) for g in grads.values())


def test_registered_for_both_datasets():
    for dataset in ("omniglot", "miniimagenet"):
        assert episodes._dataset(dataset) == (it.episodify, it.ImageSource)


# ------------------------------------------------------------------------------------- the mirror

MIRROR = Path(
    os.environ.get("METALEARN_TEST_MIRROR")
    or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)
needs_mirror = pytest.mark.skipif(
    not (MIRROR / "images_background.zip").is_file(), reason=f"no dataset mirror at {MIRROR}"
)


@needs_mirror
def test_mirror_counts():
    data = im.read_omniglot(MIRROR)
    assert len(data.names) == 242 and data.images.shape == (4840, 28, 28)
    np.testing.assert_array_equal(data.counts, 20)
    assert len({name.split("/")[0] for name in data.names}) == 5 + 3
    sizes = {}
    for split, file in im.MINIIMAGENET_FILES.items():
        images, classes = im.validate_miniimagenet(im.load_pickle(MIRROR / file), file)
        sizes[split] = len(classes)
        assert {c.size for c in classes.values()} == {20} and images.shape[0] == 20 * len(classes)
    assert sizes == {"train": 64, "val": 16, "test": 20}


@needs_mirror
@pytest.mark.parametrize(
    ("benchmark", "overrides", "classes"),
    [
        (
            "omniglot-way5shot1",
            ["data.omniglot.classes.train=162", "data.omniglot.classes.val=20"]
            + ["data.omniglot.classes.test=60"],
            {"train": 162 * 4, "val": 20, "test": 60},
        ),
        ("miniimagenet-way5shot1", [], {"train": 64, "val": 16, "test": 20}),
    ],
)
def test_mirror_episodify(tmp_path, capsys, benchmark, overrides, classes):
    cfg = load_config(overrides)
    start = time.perf_counter()
    meta = episodes.episodify(cfg, benchmark, tmp_path / "bench", raw_dir=MIRROR)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[episodify {benchmark} from the mirror: {seconds:.2f} s]")
    assert meta["counts"]["classes"] == classes
    source = episodes.load_episodes(tmp_path / "bench")
    section = getattr(cfg.data, source.meta["dataset"])
    size, channels = (28, 1) if benchmark.startswith("omniglot") else (84, 3)
    assert (source.image_size, source.in_channels, source.n_classes) == (size, channels, 5)
    train_queries = 1 if benchmark.startswith("omniglot") else 15  # params.yaml: MAML's code
    support, query = source.sample_train_episodes(16, gen(0))
    check_task_invariants(support, query, 5, 1, train_queries)
    (xs, ys), (xq, yq) = source.sample_train(4, gen(0))
    assert xs.shape == (4, 5, channels, size, size)
    assert xq.shape == (4, 5 * train_queries, channels, size, size)
    train_classes = set(source.classes["train"]["class"].to_list())
    for split in ("val", "test"):
        sup, qry = source.fixed_episodes(split)
        check_task_invariants(sup, qry, 5, 1, 15)
        assert sup.image.shape[0] == getattr(section, f"{split}_tasks")
        assert not set(qry.klass.flatten().tolist()) & train_classes
    (fs, _), (fq, _) = source.fixed_tasks("test")
    assert fs.dtype == torch.float32 and bool(torch.isfinite(fq).all())
