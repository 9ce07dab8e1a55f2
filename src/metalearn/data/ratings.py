"""The rating datasets' official files as one long polars table ``(user, item, rating)``.

Every reader takes the official archive as downloaded (the member is read straight from the zip)
and validates it; any problem is a :class:`ValueError` that names the file (``archive:member``),
the line or row where it makes sense, and what is wrong. A missing archive is a
:class:`FileNotFoundError`.

* MovieLens 100K: ``ml-100k.zip`` member ``ml-100k/u.data``, tab-separated
  ``user item rating timestamp``; MovieLens 1M: ``ml-1m.zip`` member ``ml-1m/ratings.dat``,
  ``UserID::MovieID::Rating::Timestamp``. Ratings are integers 1..5; ``user`` and ``item`` are
  the files' own ids (1-based, with gaps for ML-1M's movies).
* Jester dataset 1: ``jester_dataset_1_{p}.zip`` member ``jester-data-{p}.xls`` (Excel BIFF, read
  with xlrd), one row per user: column 0 the number of jokes the user rated, then 100 joke
  columns with ratings in [-10, 10] and 99 for "not rated". ``item`` is the joke's index 0..99
  (column j + 1) and ``user`` is ``p * JESTER_USER_OFFSET + row`` (row 0-based within the sheet),
  so ids are unique across parts and do not depend on which parts are read.

  Column 0 is checked against the number of rated cells and a disagreement is an error: it is
  redundant bookkeeping in the official layout, so a mismatch means a damaged or re-packed file.
  Checked on the real data: all 2,000 users of the local mirror's part 1 agree (parts 2 and 3
  are not on the mirror and have not been checked).

Duplicate ``(user, item)`` pairs are errors too (the official files have none).
:data:`RATING_RANGE` gives each dataset's rating scale; :func:`scale` maps it onto [0, 1].
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import xlrd

from metalearn.errors import DataError, MissingInputError

#: each dataset's rating scale (lo, hi); the targets are y = (r - lo) / (hi - lo) in [0, 1]
RATING_RANGE: dict[str, tuple[float, float]] = {
    "jester": (-10.0, 10.0),
    "movielens100k": (1.0, 5.0),
    "movielens1m": (1.0, 5.0),
}
#: the official archive and member of each MovieLens dataset, and its field separator
MOVIELENS_FILES: dict[str, tuple[str, str, str]] = {
    "movielens100k": ("ml-100k.zip", "ml-100k/u.data", "\t"),
    "movielens1m": ("ml-1m.zip", "ml-1m/ratings.dat", "::"),
}
JESTER_JOKES = 100
JESTER_NOT_RATED = 99.0
#: Jester user ids: part p's row r is user p * JESTER_USER_OFFSET + r (a part has < 25,000 rows)
JESTER_USER_OFFSET = 100_000

SCHEMA = {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float64}


def jester_archive(part: int) -> tuple[str, str]:
    """The official archive and member names of Jester dataset 1, part ``part`` (1..3)."""
    return f"jester_dataset_1_{part}.zip", f"jester-data-{part}.xls"


def scale(rating: np.ndarray | pl.Expr, dataset: str) -> np.ndarray | pl.Expr:
    """Ratings of ``dataset`` mapped onto [0, 1]: ``(r - lo) / (hi - lo)``."""
    lo, hi = RATING_RANGE[dataset]
    return (rating - lo) / (hi - lo)


# ------------------------------------------------------------------------------------ archives


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` of the zip ``archive``."""
    if not archive.is_file():
        raise MissingInputError(f"{archive} is missing; run the download stage (dvc repro)")
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
                raise DataError(f"{archive}: no member {member!r} in the zip (it holds: {shown})")
            return zf.read(member)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a valid zip archive ({e})") from e


# ----------------------------------------------------------------------------------- MovieLens


def parse_movielens(data: bytes, separator: str, source: str) -> pl.DataFrame:
    """``user, item, rating, timestamp`` lines (fields split by ``separator``) as a table
    ``(user, item, rating)``; ``source`` names the file in error messages."""
    try:
        lines = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            separator="\x1f",  # one column: each line whole, split below
            quote_char=None,
            new_columns=["text"],
            schema_overrides={"text": pl.String},
            encoding="utf8-lossy",
        )
    except pl.exceptions.NoDataError as e:
        raise DataError(f"{source}: the file is empty") from e
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{source}: cannot read the file ({e})") from e
    if lines.width != 1:  # the unit separator appears in the data
        raise DataError(f"{source}: unexpected control character \\x1f in the file")
    if lines.height == 0:
        raise DataError(f"{source}: the file has no ratings")
    fields = ["user", "item", "rating", "timestamp"]
    table = lines.with_row_index("line", offset=1).with_columns(
        parts=pl.col("text").fill_null("").str.split(separator)
    )
    bad = table.filter(pl.col("parts").list.len() != len(fields))
    if bad.height:
        row = bad.row(0, named=True)
        n = len(row["parts"])
        raise DataError(
            f"{source}, line {row['line']}: {n} field(s) separated by {separator!r}, expected "
            f"{len(fields)} (user, item, rating, timestamp): {_show(data, row['line'])}"
            f" ({bad.height} such line(s))"
        )
    table = table.select(
        "line",
        *(
            pl.col("parts").list.get(i).str.strip_chars().cast(pl.Int64, strict=False).alias(f)
            for i, f in enumerate(fields)
        ),
    )
    bad = table.filter(pl.any_horizontal(pl.col(fields).is_null()))
    if bad.height:
        line = bad.item(0, "line")
        raise DataError(
            f"{source}, line {line}: fields must be integers: {_show(data, line)}"
            f" ({bad.height} such line(s))"
        )
    lo, hi = RATING_RANGE["movielens100k"]
    bad = table.filter(
        ~pl.col("rating").is_between(lo, hi) | (pl.col("user") < 1) | (pl.col("item") < 1)
    )
    if bad.height:
        row = bad.row(0, named=True)
        what = (
            f"rating {row['rating']} outside {lo:g}..{hi:g}"
            if not lo <= row["rating"] <= hi
            else "user and item ids must be >= 1"
        )
        raise DataError(
            f"{source}, line {row['line']}: {what}: {_show(data, row['line'])}"
            f" ({bad.height} such line(s))"
        )
    out = table.select(
        pl.col("user"), pl.col("item"), pl.col("rating").cast(pl.Float64), pl.col("line")
    )
    _check_unique(out, source, "line")
    return out.drop("line")


def _show(data: bytes, line: int) -> str:
    """Line ``line`` (1-based) of ``data``, quoted and shortened."""
    text = data.split(b"\n", line)[line - 1].decode("utf-8", "replace").rstrip("\r")
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _check_unique(table: pl.DataFrame, source: str, where: str) -> None:
    dup = table.filter(pl.struct("user", "item").is_duplicated())
    if dup.height:
        row = dup.row(0, named=True)
        same = dup.filter((pl.col("user") == row["user"]) & (pl.col("item") == row["item"]))
        places = ", ".join(str(v) for v in same[where].to_list())
        raise DataError(
            f"{source}: user {row['user']} rated item {row['item']} more than once "
            f"({where}s {places}); {dup.height} duplicated row(s) in all"
        )


def read_movielens(dataset: str, raw_dir: Path) -> pl.DataFrame:
    """MovieLens ``dataset`` (``movielens100k`` or ``movielens1m``) from its official zip in
    ``raw_dir``: columns ``user``, ``item`` (the files' ids), ``rating`` (1..5)."""
    archive, member, separator = MOVIELENS_FILES[dataset]
    path = Path(raw_dir) / archive
    return parse_movielens(read_member(path, member), separator, f"{path}:{member}")


# -------------------------------------------------------------------------------------- Jester


def jester_long(matrix: np.ndarray, source: str, user_offset: int = 0) -> pl.DataFrame:
    """A Jester sheet (rows = users; column 0 = number rated, then 100 joke columns with 99 =
    not rated) as the long table ``(user, item, rating)`` without the 99s; row r is user
    ``user_offset + r`` and joke column j + 1 is item j. Validates the layout and values."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != JESTER_JOKES + 1:
        raise DataError(
            f"{source}: {matrix.shape[-1] if matrix.ndim else 0} column(s), expected "
            f"{JESTER_JOKES + 1} (number of jokes rated, then {JESTER_JOKES} joke columns)"
        )
    if matrix.shape[0] == 0:
        raise DataError(f"{source}: the sheet has no users")
    if not np.isfinite(matrix).all():
        row, col = np.argwhere(~np.isfinite(matrix))[0]
        raise DataError(f"{source}, row {row + 1}, column {col}: not a finite number")
    counts, ratings = matrix[:, 0], matrix[:, 1:]
    rated = ratings != JESTER_NOT_RATED
    lo, hi = RATING_RANGE["jester"]
    out_of_range = rated & ((ratings < lo) | (ratings > hi))
    if out_of_range.any():
        row, col = np.argwhere(out_of_range)[0]
        raise DataError(
            f"{source}, row {row + 1}, column {col + 1}: rating {ratings[row, col]:g} outside "
            f"[{lo:g}, {hi:g}] (and not {JESTER_NOT_RATED:g} = not rated); "
            f"{int(out_of_range.sum())} such cell(s)"
        )
    mismatch = counts != rated.sum(axis=1)
    if mismatch.any():
        row = int(np.flatnonzero(mismatch)[0])
        raise DataError(
            f"{source}, row {row + 1}: column 0 says {counts[row]:g} jokes rated but "
            f"{int(rated[row].sum())} joke cells are not {JESTER_NOT_RATED:g}; "
            f"{int(mismatch.sum())} such row(s)"
        )
    rows, cols = np.nonzero(rated)  # row-major: by user, then joke
    return pl.DataFrame(
        {
            "user": rows.astype(np.int64) + user_offset,
            "item": cols.astype(np.int64),
            "rating": ratings[rows, cols],
        },
        schema=SCHEMA,
    )


def parse_jester_xls(data: bytes, source: str) -> np.ndarray:
    """The first sheet of an Excel (BIFF) workbook as a float matrix; every cell must be a
    number."""
    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True)
        sheet = book.sheet_by_index(0)
    except (xlrd.XLRDError, ValueError, IndexError, AssertionError) as e:
        raise DataError(f"{source}: not a readable Excel (.xls) workbook ({e})") from e
    if sheet.ncols != JESTER_JOKES + 1:
        raise DataError(
            f"{source}: {sheet.ncols} column(s), expected {JESTER_JOKES + 1} (number of jokes "
            f"rated, then {JESTER_JOKES} joke columns)"
        )
    matrix = np.empty((sheet.nrows, sheet.ncols), dtype=np.float64)
    for r in range(sheet.nrows):
        types = sheet.row_types(r)
        if len(types) != sheet.ncols or any(t != xlrd.XL_CELL_NUMBER for t in types):
            cols = [c for c, t in enumerate(types) if t != xlrd.XL_CELL_NUMBER]
            col = cols[0] if cols else len(types)
            value = sheet.cell_value(r, col) if col < len(types) else ""
            raise DataError(
                f"{source}, row {r + 1}, column {col}: expected a number, found {value!r}"
            )
        matrix[r] = sheet.row_values(r)
    return matrix


def read_jester(parts: Sequence[int], raw_dir: Path) -> pl.DataFrame:
    """Jester dataset 1, the given parts, from the official zips in ``raw_dir``: columns
    ``user`` (``part * JESTER_USER_OFFSET + row``), ``item`` (joke 0..99), ``rating``."""
    frames = []
    for part in parts:
        archive, member = jester_archive(part)
        path = Path(raw_dir) / archive
        source = f"{path}:{member}"
        matrix = parse_jester_xls(read_member(path, member), source)
        if matrix.shape[0] >= JESTER_USER_OFFSET:
            raise DataError(f"{source}: {matrix.shape[0]} rows, expected < {JESTER_USER_OFFSET}")
        frames.append(jester_long(matrix, source, user_offset=part * JESTER_USER_OFFSET))
    return pl.concat(frames)


def read_ratings(dataset: str, raw_dir: Path, parts: Sequence[int] = (1, 2, 3)) -> pl.DataFrame:
    """The ratings of ``dataset`` (``jester``, ``movielens100k``, ``movielens1m``) from the
    official archives in ``raw_dir``; ``parts`` (Jester only) are the parts to read."""
    if dataset == "jester":
        return read_jester(parts, raw_dir)
    if dataset in MOVIELENS_FILES:
        return read_movielens(dataset, raw_dir)
    raise DataError(f"unknown rating dataset {dataset!r}; known: {', '.join(RATING_RANGE)}")


__all__ = [
    "JESTER_USER_OFFSET",
    "MOVIELENS_FILES",
    "RATING_RANGE",
    "jester_archive",
    "jester_long",
    "parse_jester_xls",
    "parse_movielens",
    "read_jester",
    "read_member",
    "read_movielens",
    "read_ratings",
    "scale",
]
