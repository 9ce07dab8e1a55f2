"""Rating datasets: parsing the official files, validation, user splits, fixed tasks, SVD item
features and the TaskSource. Unit tests build tiny archives in the official formats; the
integration tests read the local mirror (skipped when it is absent)."""

import dataclasses
import functools
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from metalearn.config import (
    JesterConfig,
    MovieLensConfig,
    RatingSetting,
    UserSplit,
    load_config,
)
from metalearn.data import rating_tasks as rt
from metalearn.data.ratings import (
    JESTER_USER_OFFSET,
    jester_long,
    read_jester,
    read_movielens,
    read_ratings,
    scale,
)

MIRROR = Path(
    os.environ.get("METALEARN_TEST_MIRROR")
    or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)


def needs_mirror(*files: str):
    missing = [f for f in files if not (MIRROR / f).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"no {', '.join(missing)} in {MIRROR}")


# ------------------------------------------------------------------------------------ fixtures


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def ml100k(raw: Path, lines: list[str]) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines).encode()
    return write_zip(raw / "ml-100k.zip", {"ml-100k/README": b"readme", "ml-100k/u.data": text})


def ml1m(raw: Path, lines: list[str]) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines).encode()
    return write_zip(raw / "ml-1m.zip", {"ml-1m/ratings.dat": text})


def random_ratings(
    n_users: int = 60, n_items: int = 40, lo: int = 8, hi: int = 30, seed: int = 0
) -> list[tuple[int, int, int]]:
    """(user, item, rating) rows, ids 1-based, each user rating lo..hi distinct items."""
    gen = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        items = gen.choice(n_items, size=int(gen.integers(lo, hi + 1)), replace=False) + 1
        rows += [(user, int(i), int(gen.integers(1, 6))) for i in items]
    return rows


def tsv(rows: list[tuple[int, int, int]]) -> list[str]:
    return [f"{u}\t{i}\t{r}\t{880000000 + n}" for n, (u, i, r) in enumerate(rows)]


@functools.cache
def real_sections():
    cfg = load_config()
    return cfg.data.movielens100k, cfg.data.jester


def movielens_section(**kw) -> MovieLensConfig:
    """``data.movielens100k`` of params.yaml with small values (other keys kept as they are)."""
    args = {
        "seed": 0,
        "users": UserSplit(val=0.2, test=0.2),
        "embedding_dim": 5,
        "val_tasks": 4,
        "test_tasks": 4,
        "settings": {"shot5": RatingSetting(5, 5), "shot10": RatingSetting(10, 10)},
    } | kw
    return dataclasses.replace(real_sections()[0], **args)


def build(raw: Path, out: Path, section=None, setting: str = "shot5", dataset="movielens100k"):
    out.mkdir(parents=True, exist_ok=True)
    meta = rt.episodify(section or movielens_section(), dataset, setting, raw, out)
    return meta | {"dataset": dataset, "setting": setting}


@pytest.fixture
def ml_raw(tmp_path) -> Path:
    ml100k(tmp_path / "raw", tsv(random_ratings()))
    return tmp_path / "raw"


def jester_matrix(n_users: int = 30, seed: int = 0, lo: int = 12, hi: int = 40) -> np.ndarray:
    gen = np.random.default_rng(seed)
    m = np.full((n_users, 101), 99.0)
    for row in range(n_users):
        jokes = gen.choice(100, size=int(gen.integers(lo, hi + 1)), replace=False)
        m[row, 1 + jokes] = np.round(gen.uniform(-10, 10, size=len(jokes)), 2)
        m[row, 0] = len(jokes)
    return m


def xls_bytes(matrix, text_cell: tuple[int, int] | None = None) -> bytes:
    xlwt = pytest.importorskip("xlwt")
    book = xlwt.Workbook()
    sheet = book.add_sheet("jester-data-1")
    for r, row in enumerate(matrix):
        for c, value in enumerate(row):
            sheet.write(r, c, "n/a" if (r, c) == text_cell else float(value))
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def jester_zip(raw: Path, part: int, matrix, **kw) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    return write_zip(
        raw / f"jester_dataset_1_{part}.zip", {f"jester-data-{part}.xls": xls_bytes(matrix, **kw)}
    )


# ------------------------------------------------------------------------------------- parsing


def test_parse_movielens_100k(tmp_path):
    ml100k(tmp_path, ["196\t242\t3\t881250949", "186\t302\t1\t891717742", " 22\t377\t5\t8788"])
    df = read_movielens("movielens100k", tmp_path)
    assert df.schema == {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float64}
    assert df.rows() == [(196, 242, 3.0), (186, 302, 1.0), (22, 377, 5.0)]
    assert read_ratings("movielens100k", tmp_path).equals(df)


def test_parse_movielens_1m(tmp_path):
    ml1m(tmp_path, ["1::1193::5::978300760", "1::661::3::978302109", "2::1::1::978300000"])
    df = read_movielens("movielens1m", tmp_path)
    assert df.rows() == [(1, 1193, 5.0), (1, 661, 3.0), (2, 1, 1.0)]


def test_scale_maps_the_rating_range_onto_0_1():
    assert scale(np.array([1.0, 3.0, 5.0]), "movielens1m").tolist() == [0.0, 0.5, 1.0]
    assert scale(np.array([-10.0, 0.0, 10.0]), "jester").tolist() == [0.0, 0.5, 1.0]


GOOD = "1\t2\t3\t100"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD, "1\t3\t4"], r"u\.data, line 2: 3 field\(s\) separated by '\\t', expected 4"),
        ([GOOD, "1\t3\t4\t5\t6"], r"line 2: 5 field\(s\)"),
        ([GOOD, GOOD.replace("1", "2", 1), "", GOOD], r"line 3: 1 field\(s\)"),  # blank line
        ([GOOD, "1\tabc\t4\t100"], r"u\.data, line 2: fields must be integers: '1\\tabc"),
        ([GOOD, "1\t3\t4.5\t100"], r"line 2: fields must be integers"),
        ([GOOD, "1\t3\t6\t100"], r"u\.data, line 2: rating 6 outside 1\.\.5"),
        (["1\t3\t0\t100"], r"line 1: rating 0 outside 1\.\.5"),
        ([GOOD, "0\t3\t4\t100"], r"line 2: user and item ids must be >= 1"),
        ([GOOD, "1\t2\t5\t200"], r"user 1 rated item 2 more than once \(lines 1, 2\)"),
    ],
)
def test_bad_movielens_lines_name_file_line_and_problem(tmp_path, lines, message):
    zip_path = ml100k(tmp_path, lines)
    with pytest.raises(ValueError, match=message) as err:
        read_movielens("movielens100k", tmp_path)
    assert f"{zip_path}:ml-100k/u.data" in str(err.value)


def test_movielens_1m_with_the_wrong_separator(tmp_path):
    ml1m(tmp_path, ["1::2::3::4", "1\t3\t4\t5"])
    with pytest.raises(ValueError, match=r"ratings\.dat, line 2: 1 field\(s\) separated by '::'"):
        read_movielens("movielens1m", tmp_path)


def test_missing_member_missing_archive_and_not_a_zip(tmp_path):
    write_zip(tmp_path / "ml-100k.zip", {"ml-100k/u.item": b"x"})
    with pytest.raises(ValueError, match=r"ml-100k\.zip: no member 'ml-100k/u\.data'.*u\.item"):
        read_movielens("movielens100k", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ml-1m\.zip is missing"):
        read_movielens("movielens1m", tmp_path)
    (tmp_path / "ml-1m.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"ml-1m\.zip: not a valid zip"):
        read_movielens("movielens1m", tmp_path)
    ml1m(tmp_path, [])
    with pytest.raises(ValueError, match=r"ratings\.dat: the file is empty"):
        read_movielens("movielens1m", tmp_path)


# -------------------------------------------------------------------------------------- Jester


def test_jester_long_format_from_an_array():
    m = np.full((2, 101), 99.0)
    m[0, [0, 1, 100]] = [2, -10.0, 3.5]  # user 0 rated jokes 0 and 99
    m[1, [0, 5]] = [1, 10.0]  # user 1 rated joke 4
    df = jester_long(m, "sheet", user_offset=7)
    assert df.rows() == [(7, 0, -10.0), (7, 99, 3.5), (8, 4, 10.0)]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.__setitem__((1, 3), 10.5), r"sheet, row 2, column 3: rating 10\.5 outside"),
        (lambda m: m.__setitem__((0, 0), 5), r"sheet, row 1: column 0 says 5 jokes rated but 2"),
        (lambda m: m.__setitem__((1, 7), np.nan), r"sheet, row 2, column 7: not a finite number"),
    ],
)
def test_jester_bad_values(edit, message):
    m = np.full((2, 101), 99.0)
    m[:, 0], m[:, 1:3] = 2, 1.0
    edit(m)
    with pytest.raises(ValueError, match=message):
        jester_long(m, "sheet")


def test_jester_wrong_column_count():
    with pytest.raises(ValueError, match=r"sheet: 100 column\(s\), expected 101"):
        jester_long(np.zeros((3, 100)), "sheet")


def test_jester_xls_parts_and_user_offsets(tmp_path):
    m1, m3 = jester_matrix(4, seed=1), jester_matrix(3, seed=3)
    jester_zip(tmp_path, 1, m1)
    jester_zip(tmp_path, 3, m3)
    df = read_jester([1, 3], tmp_path)
    expected = pl.concat(
        [jester_long(m1, "a", JESTER_USER_OFFSET), jester_long(m3, "b", 3 * JESTER_USER_OFFSET)]
    )
    assert df.equals(expected)
    assert df.height == int(m1[:, 0].sum() + m3[:, 0].sum())
    assert read_ratings("jester", tmp_path, parts=[3])["user"].unique().sort().to_list() == [
        300_000,
        300_001,
        300_002,
    ]


def test_jester_xls_errors(tmp_path):
    m = jester_matrix(3)
    jester_zip(tmp_path, 1, m, text_cell=(1, 4))
    with pytest.raises(ValueError, match=r"jester-data-1\.xls, row 2, column 4: expected a number"):
        read_jester([1], tmp_path)
    jester_zip(tmp_path, 1, m[:, :90])
    with pytest.raises(ValueError, match=r"jester-data-1\.xls: 90 column\(s\), expected 101"):
        read_jester([1], tmp_path)
    write_zip(tmp_path / "jester_dataset_1_2.zip", {"jester-data-1.xls": xls_bytes(m)})
    with pytest.raises(ValueError, match=r"jester_dataset_1_2\.zip: no member 'jester-data-2"):
        read_jester([2], tmp_path)
    write_zip(tmp_path / "jester_dataset_1_3.zip", {"jester-data-3.xls": b"garbage"})
    with pytest.raises(ValueError, match=r"jester-data-3\.xls: not a readable Excel"):
        read_jester([3], tmp_path)


# ------------------------------------------------------------------------------------ episodes


def users_of(out: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(out / name)


def test_split_is_seeded_disjoint_and_setting_independent(ml_raw, tmp_path):
    a = build(ml_raw, tmp_path / "a", setting="shot5")
    b = build(ml_raw, tmp_path / "b", setting="shot10")
    c = build(ml_raw, tmp_path / "c", section=movielens_section(seed=1))
    ra, rb, rc = (pl.read_parquet(tmp_path / x / rt.RATINGS) for x in "abc")
    assert ra.equals(rb)  # same split for both settings
    assert not ra["split"].equals(rc["split"])  # another seed, another split
    per_user = ra.group_by("user").agg(pl.col("split").n_unique())
    assert (per_user["split"] == 1).all()
    counts = ra.unique("user")["split"].value_counts()
    assert dict(counts.iter_rows()) == {"train": 36, "val": 12, "test": 12}
    assert a["counts"]["users"] == {"train": 36, "val": 12, "test": 12} == b["counts"]["users"]
    assert c["counts"]["ratings"] == ra.height == len(random_ratings())


def test_same_seed_same_episodes(ml_raw, tmp_path):
    build(ml_raw, tmp_path / "a")
    build(ml_raw, tmp_path / "b")
    for name in (rt.RATINGS, "val.parquet", "test.parquet"):
        assert pl.read_parquet(tmp_path / "a" / name).equals(pl.read_parquet(tmp_path / "b" / name))
    for name in (rt.ITEMS, rt.ITEM_IDS):
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
        )
    build(ml_raw, tmp_path / "c", section=movielens_section(seed=5))
    assert not pl.read_parquet(tmp_path / "a/test.parquet").equals(
        pl.read_parquet(tmp_path / "c/test.parquet")
    )


@pytest.mark.parametrize("setting", ["shot5", "shot10"])
def test_fixed_tasks_are_eligible_held_out_users_with_disjoint_support_and_query(
    ml_raw, tmp_path, setting
):
    meta = build(ml_raw, tmp_path, setting=setting)
    shots = queries = 5 if setting == "shot5" else 10
    ratings = pl.read_parquet(tmp_path / rt.RATINGS)
    count = dict(ratings.group_by("user").len().iter_rows())
    split = dict(ratings.select("user", "split").unique().iter_rows())
    eligible = {
        s: sum(1 for u, n in count.items() if split[u] == s and n >= shots + queries)
        for s in rt.SPLITS
    }
    assert meta["counts"]["eligible_users"] == eligible
    for name in ("val", "test"):
        tasks = pl.read_parquet(tmp_path / f"{name}.parquet")
        assert tasks.columns == ["task", "role", "item", "target", "user"]
        assert tasks["task"].n_unique() == 4
        for _, task in tasks.group_by("task"):
            (user,) = task["user"].unique()
            assert split[user] == name and count[user] >= shots + queries
            support = set(task.filter(pl.col("role") == "support")["item"])
            query = set(task.filter(pl.col("role") == "query")["item"])
            assert (len(support), len(query)) == (shots, queries) and not support & query
        # every (user, item, target) is a real rating of that user
        joined = tasks.join(ratings, on=["user", "item"], how="left")
        assert (joined["target"] == joined["y"]).all()
    test_users = set(pl.read_parquet(tmp_path / "test.parquet")["user"])
    train_users = {u for u, s in split.items() if s == "train"}
    assert not test_users & train_users


@pytest.mark.parametrize("setting", ["shot5", "shot10"])
def test_test_all_is_the_protocol_tasks_then_every_other_eligible_test_user(
    ml_raw, tmp_path, setting
):
    meta = build(ml_raw, tmp_path / "a", setting=setting)
    n, need = 4, 10 if setting == "shot5" else 20
    protocol = pl.read_parquet(tmp_path / "a/test.parquet")
    every = pl.read_parquet(tmp_path / "a" / f"{rt.ALL_USERS}.parquet")
    assert every.schema == protocol.schema
    assert every.head(protocol.height).equals(protocol)  # the protocol's tasks, row for row
    rest = every.slice(protocol.height)
    ratings = pl.read_parquet(tmp_path / "a" / rt.RATINGS)
    count = dict(ratings.group_by("user").len().iter_rows())
    split = dict(ratings.select("user", "split").unique().iter_rows())
    eligible = {u for u, c in count.items() if split[u] == "test" and c >= need}
    users = rest.group_by("task", maintain_order=True).agg(pl.col("user").unique())
    assert users["task"].to_list() == list(range(n, n + len(users)))
    assert all(len(u) == 1 for u in users["user"])
    rest_users = [u[0] for u in users["user"]]
    assert rest_users == sorted(eligible - set(protocol["user"]))  # one each, by user id
    assert set(every["user"]) == eligible and set(every["user"]).isdisjoint(
        u for u, s in split.items() if s != "test"
    )
    assert meta["tasks"][rt.ALL_USERS] == every["task"].n_unique() == len(eligible)
    for _, task in rest.group_by("task"):
        assert task["role"].to_list() == ["support"] * (need // 2) + ["query"] * (need // 2)
        assert task["item"].n_unique() == need  # distinct ratings of that user
    joined = rest.join(ratings, on=["user", "item"], how="left")
    assert (joined["target"] == joined["y"]).all()
    build(ml_raw, tmp_path / "b", setting=setting)
    again = pl.read_parquet(tmp_path / "b" / f"{rt.ALL_USERS}.parquet")
    assert again.equals(every)


def test_rating_source_reads_the_tasks_of_every_test_user(ml_raw, tmp_path):
    meta = build(ml_raw, tmp_path)
    source = rt.RatingSource(tmp_path, meta)
    assert source.all_users_split == rt.ALL_USERS
    (sx, sy), (qx, qy) = source.fixed_tasks(source.all_users_split)
    (px, _), (_, pqy) = source.fixed_tasks("test")
    assert sx.shape == (meta["tasks"][rt.ALL_USERS], 5) and qy.shape == sx.shape
    assert torch.equal(sx[: len(px)], px) and torch.equal(qy[: len(pqy)], pqy)
    del meta["tasks"][rt.ALL_USERS]  # episodes written before there were such tasks
    assert rt.RatingSource(tmp_path, meta).all_users_split is None


def test_not_enough_eligible_users_says_how_many_and_which_key(ml_raw, tmp_path):
    meta = build(ml_raw, tmp_path / "ok", setting="shot10")
    n = meta["counts"]["eligible_users"]["test"]
    section = movielens_section(test_tasks=n + 1)
    with pytest.raises(ValueError) as err:
        build(ml_raw, tmp_path / "bad", section=section, setting="shot10")
    at = "data.movielens100k.settings.shot10"
    message = str(err.value)
    assert message.startswith(
        f"movielens100k-shot10: a task needs 20 ratings of one user ({at}.shots = 10 + .queries "
        f"= 10), and only {n} meta-test users have that many, for "
        f"data.movielens100k.test_tasks = {n + 1} tasks: lower {at}.shots or .queries (at most "
    )
    most = int(message.split("(at most ")[1].split()[0])
    assert 0 < most < 20  # the (n+1)-th most ratings among the meta-test users
    assert message.endswith(
        "together here), or lower data.movielens100k.test_tasks, or raise "
        "data.movielens100k.users.test"
    )
    v = meta["counts"]["eligible_users"]["val"]
    with pytest.raises(ValueError, match=rf"only {v} meta-val users .*\.val_tasks = {v + 1} "):
        build(
            ml_raw, tmp_path / "bad", section=movielens_section(val_tasks=v + 1), setting="shot10"
        )
    section = movielens_section(settings={"big": RatingSetting(40, 40)})
    with pytest.raises(ValueError, match=r"no meta-train user has >= 80 ratings"):
        build(ml_raw, tmp_path / "bad", section=section, setting="big")


def test_svd_features_use_meta_train_users_only(tmp_path):
    rows = random_ratings()
    ml100k(tmp_path / "raw", tsv(rows))
    build(tmp_path / "raw", tmp_path / "a")
    ratings = pl.read_parquet(tmp_path / "a" / rt.RATINGS)
    split = dict(ratings.select("user", "split").unique().iter_rows())
    items = np.load(tmp_path / "a" / rt.ITEMS)

    def flipped(which: str) -> list[tuple[int, int, int]]:
        return [(u, i, r % 5 + 1 if split[u] == which else r) for u, i, r in rows]

    for which, same in (("test", True), ("val", True), ("train", False)):
        ml100k(tmp_path / which, tsv(flipped(which)))
        build(tmp_path / which, tmp_path / f"out-{which}")
        other = np.load(tmp_path / f"out-{which}" / rt.ITEMS)
        assert np.array_equal(items, other) == same, which


def test_item_rated_by_held_out_users_only_gets_the_zero_vector(tmp_path):
    rows = random_ratings()
    ml100k(tmp_path / "raw", tsv(rows))
    meta = build(tmp_path / "raw", tmp_path / "a")
    ratings = pl.read_parquet(tmp_path / "a" / rt.RATINGS)
    split = dict(ratings.select("user", "split").unique().iter_rows())
    held_out = [u for u, s in sorted(split.items()) if s != "train"][:3]
    new_item = 1000  # the largest id: the other items keep their rows
    ml100k(tmp_path / "raw2", tsv(rows + [(u, new_item, 4) for u in held_out]))
    meta2 = build(tmp_path / "raw2", tmp_path / "b")
    a, b = np.load(tmp_path / "a" / rt.ITEMS), np.load(tmp_path / "b" / rt.ITEMS)
    assert b.shape == (meta["counts"]["items"] + 1, 5) and meta2["in_dim"] == 5
    assert np.load(tmp_path / "b" / rt.ITEM_IDS)[-1] == new_item
    assert np.array_equal(b[-1], np.zeros(5, np.float32))
    np.testing.assert_array_equal(a, b[:-1])  # nothing else changes


def test_svd_embedding_matches_a_reference_svd_and_is_standardized():
    gen = np.random.default_rng(0)
    user = np.repeat(np.arange(30), 12)
    item = np.concatenate([gen.choice(25, 12, replace=False) for _ in range(30)]) + 3
    y = gen.uniform(0, 1, len(user))
    emb = rt.svd_item_embedding(user, item, y, n_items=30, dim=6, key="k")
    assert emb.dtype == np.float32 and emb.shape == (30, 6)
    seen = np.unique(item)
    unseen = np.setdiff1d(np.arange(30), seen)
    assert (emb[unseen] == 0).all()
    np.testing.assert_allclose(emb[seen].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(emb[seen].std(0), 1, atol=1e-5)
    # reference: torch.linalg.svd of the user-centred matrix
    m = np.zeros((30, len(seen)))
    cols = np.searchsorted(seen, item)
    means = np.bincount(user, y) / np.bincount(user)
    m[user, cols] = y - means[user]
    _, s, vh = torch.linalg.svd(torch.from_numpy(m), full_matrices=False)
    ref = (vh.numpy().T * s.numpy())[:, :6]
    ref = (ref - ref.mean(0)) / ref.std(0)
    sign = np.sign((ref * emb[seen]).sum(0))
    np.testing.assert_allclose(emb[seen], ref * sign, atol=1e-5)
    with pytest.raises(ValueError, match=r"k = 31 exceeds the rank available: .* 30 users x 25"):
        rt.svd_item_embedding(user, item, y, 30, 31, "k")
    # a rank-2 matrix: every user rates the same 25 items with one of two patterns
    user = np.repeat(np.arange(30), 25)
    item = np.tile(np.arange(25), 30)
    y = np.where(user[:, None] % 2 == 0, np.linspace(0, 1, 25), np.linspace(1, 0, 25) ** 2)
    with pytest.raises(ValueError, match=r"k = 3 exceeds the rank 2 of the meta-train"):
        rt.svd_item_embedding(user, item, y[np.arange(750), item], 25, 3, "k")


def test_embedding_dim_too_large_names_the_key(ml_raw, tmp_path):
    section = movielens_section(embedding_dim=41)
    with pytest.raises(ValueError, match=r"data\.movielens100k\.embedding_dim = 41 exceeds the"):
        build(ml_raw, tmp_path, section=section)


# ---------------------------------------------------------------------------------- TaskSource


def jester_section(parts: list[int], **kw) -> JesterConfig:
    """``data.jester`` of params.yaml with small values and the given parts."""
    section = real_sections()[1]
    args = {
        "seed": 0,
        "users": UserSplit(val=0.2, test=0.2),
        "val_tasks": 3,
        "test_tasks": 3,
        "settings": {"shot5": RatingSetting(5, 7)},
    } | kw
    if hasattr(section, "download"):
        args["download"] = dataclasses.replace(section.download, parts=parts)
    else:
        args["parts"] = parts
    return dataclasses.replace(section, **args)


def test_task_source_shapes_dtypes_and_disjoint_sampled_tasks(tmp_path):
    jester_zip(tmp_path / "raw", 1, jester_matrix(30))
    meta = build(tmp_path / "raw", tmp_path / "out", section=jester_section([1]), dataset="jester")
    assert meta["in_dim"] == 100 and meta["features"] == "one-hot"
    assert meta["rating_range"] == [-10.0, 10.0] and meta["kind"] == "regression"
    src = rt.RatingSource(tmp_path / "out", meta)
    assert (src.architecture, src.loss_kind, src.in_dim, src.out_dim) == ("ratings", "mse", 100, 1)
    assert src.n_items == 100 and src.n_train_users == meta["counts"]["eligible_users"]["train"]
    (xs, ys), (xq, yq) = src.sample_train(8, torch.Generator().manual_seed(0))
    assert xs.shape == (8, 5) and ys.shape == (8, 5)
    assert xq.shape == (8, 7) and yq.shape == (8, 7)
    assert {xs.dtype, xq.dtype} == {torch.int64} and {ys.dtype, yq.dtype} == {torch.float32}
    assert ((ys >= 0) & (ys <= 1)).all() and ((yq >= 0) & (yq <= 1)).all()
    assert ((xs >= 0) & (xs < 100)).all()  # item ids: rows of the one-hot feature table
    for s_items, q_items in zip(xs, xq, strict=True):
        items = s_items.tolist() + q_items.tolist()
        assert len(set(items)) == 12  # no rating used twice within a task
    again = src.sample_train(8, torch.Generator().manual_seed(0))
    assert torch.equal(again[0][0], xs) and torch.equal(again[1][1], yq)
    for split, n in (("val", 3), ("test", 3)):
        (fxs, fys), (fxq, fyq) = src.fixed_tasks(split)
        assert fxs.shape == (n, 5) and fxq.shape == (n, 7)
        assert fys.shape == (n, 5) and fyq.shape == (n, 7) and fys.dtype == torch.float32
        tasks = pl.read_parquet(tmp_path / "out" / f"{split}.parquet")
        support = tasks.filter(pl.col("role") == "support")
        assert fxs.reshape(-1).tolist() == support["item"].to_list()
        assert torch.equal(fys.reshape(-1), torch.tensor(support["target"].to_numpy()).float())
    items, ratings = src.train_ratings()
    train = pl.read_parquet(tmp_path / "out" / rt.RATINGS).filter(pl.col("split") == "train")
    assert len(items) == train.height and sorted(items.tolist()) == sorted(train["item"])
    assert src.mean_rating == pytest.approx(float(train["y"].mean()), rel=1e-6)


def test_task_source_draws_only_eligible_train_users(tmp_path):
    rows = random_ratings()
    ml100k(tmp_path / "raw", tsv(rows))
    meta = build(tmp_path / "raw", tmp_path / "out", setting="shot10")
    src = rt.RatingSource(tmp_path / "out", meta)
    ratings = pl.read_parquet(tmp_path / "out" / rt.RATINGS).filter(pl.col("split") == "train")
    count = ratings.group_by("user").len()
    ok = set(count.filter(pl.col("len") >= 20)["user"])
    by_user = {u: set(g["item"]) for (u,), g in ratings.group_by("user")}
    (xs, _), (xq, _) = src.sample_train(50, torch.Generator().manual_seed(1))
    for task in torch.cat([xs, xq], 1).tolist():
        items = set(task)
        assert len(items) == 20
        assert any(items <= by_user[u] for u in ok)  # some eligible meta-train user's ratings


def test_registration_and_loader_through_episodes(tmp_path):
    from metalearn.data.episodes import MODULES, _dataset

    for name in ("jester", "movielens100k", "movielens1m"):
        assert MODULES[name] == "metalearn.data.rating_tasks"
        assert _dataset(name) == (rt.episodify, rt.RatingSource)


# --------------------------------------------------------------------------- the real mirror


@needs_mirror("ml-100k.zip")
def test_mirror_movielens_100k_counts():
    df = read_ratings("movielens100k", MIRROR)
    assert (df.height, df["user"].n_unique(), df["item"].n_unique()) == (100_000, 943, 1_682)
    assert df["rating"].min() == 1 and df["rating"].max() == 5


@needs_mirror("ml-1m.zip")
def test_mirror_movielens_1m_subset_counts():
    df = read_ratings("movielens1m", MIRROR)  # the mirror keeps users 1-2999 only
    assert (df.height, df["user"].n_unique(), df["item"].n_unique()) == (487_650, 2_999, 3_615)
    assert (df["user"].min(), df["user"].max()) == (1, 2_999)


@needs_mirror("jester_dataset_1_1.zip")
def test_mirror_jester_part_1():
    df = read_ratings("jester", MIRROR, parts=[1])  # the first 2,000 users of part 1
    assert (df.height, df["user"].n_unique(), df["item"].n_unique()) == (141_547, 2_000, 100)
    assert (df["user"].min(), df["user"].max()) == (JESTER_USER_OFFSET, JESTER_USER_OFFSET + 1999)
    assert df["rating"].min() >= -10 and df["rating"].max() <= 10


@needs_mirror("ml-100k.zip")
@pytest.mark.parametrize("setting", ["shot10", "shot20"])
def test_mirror_movielens_100k_episodes(tmp_path, setting):
    from metalearn.data.episodes import episodify, load_episodes

    cfg = load_config()
    section = cfg.data.movielens100k
    meta = episodify(cfg, f"movielens100k-{setting}", tmp_path / "out", MIRROR)
    shots, queries = section.settings[setting].shots, section.settings[setting].queries
    counts = meta["counts"]
    assert counts["ratings"] == 100_000 and counts["items"] == 1_682
    assert sum(counts["users"].values()) == 943
    assert counts["users"]["test"] == round(section.users.test * 943)
    assert counts["users"]["val"] == round(section.users.val * 943)
    assert meta["in_dim"] == section.embedding_dim and meta["rating_range"] == [1.0, 5.0]
    ratings = pl.read_parquet(tmp_path / "out" / rt.RATINGS)
    per_user = ratings.group_by("user").agg(pl.len(), pl.col("split").first())
    eligible = per_user.filter(pl.col("len") >= shots + queries)["split"].value_counts()
    assert counts["eligible_users"] == dict(eligible.iter_rows())
    train_users = set(ratings.filter(pl.col("split") == "train")["user"])
    for split, n_tasks in (("val", section.val_tasks), ("test", section.test_tasks)):
        tasks = pl.read_parquet(tmp_path / "out" / f"{split}.parquet")
        assert tasks["task"].n_unique() == n_tasks == tasks["user"].n_unique()
        assert not set(tasks["user"]) & train_users
        assert tasks.height == n_tasks * (shots + queries)
        dup = tasks.group_by("task").agg(pl.col("item").n_unique())
        assert (dup["item"] == shots + queries).all()
    items = np.load(tmp_path / "out" / rt.ITEMS, allow_pickle=False)
    assert items.shape == (1_682, section.embedding_dim) and items.dtype == np.float32
    unseen = counts["items"] - counts["items_rated_in_train"]
    assert (np.abs(items).sum(1) == 0).sum() == unseen
    src = load_episodes(tmp_path / "out")
    (xs, ys), (xq, yq) = src.fixed_tasks("test")
    assert xs.shape == (section.test_tasks, shots) and xs.dtype == torch.int64
    assert yq.shape == (section.test_tasks, queries)
    assert src.features.shape == (1_682, section.embedding_dim)
    (xs, ys), _ = src.sample_train(4, torch.Generator().manual_seed(0))
    assert xs.shape == (4, shots) and ys.dtype == torch.float32
