"""What a stage wrote, recorded by digest, so that the stage reading it can tell a file changed
since (rows deleted, a file edited, half a checkout restored) and refuse it in one line naming
the file and the fix, instead of using it as it is.

A record is ``{"sha256": ..., "rows": ...}`` per file, ``rows`` for a Parquet table only: the
digest decides, the row count makes the message one a user can read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from metalearn.errors import DataError
from metalearn.io import sha256_file

Record = dict[str, Any]


def fingerprint(path: str | Path) -> Record:
    """``path``'s SHA-256 and, for a Parquet table, its row count."""
    path = Path(path)
    found: Record = {"sha256": sha256_file(path)}
    if path.suffix == ".parquet":
        found["rows"] = pq.ParquetFile(path).metadata.num_rows
    return found


def fingerprints(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, Record]:
    """The :func:`fingerprint` of each file directly in ``folder`` (but ``skip``), by name."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name not in skip)
    return {path.name: fingerprint(path) for path in files}


def verify(records: Mapping[Path, Record | None], writer: str, fix: str) -> None:
    """Each file is as ``writer`` (a stage, ``episodify@jester-shot10``) recorded it; else a
    :class:`DataError` naming the first that is not, what changed, and ``fix``. A ``None``
    record: the file was written by a version that recorded none."""
    for path, expected in records.items():
        if expected is None:
            raise DataError(f"{path} was written by an older version (no digest); {fix}")
        if not path.is_file():
            raise DataError(f"{path} is missing; {fix}")
        if sha256_file(path) == expected["sha256"]:
            continue
        what = "other bytes"
        if "rows" in expected and (rows := _rows(path)) != expected["rows"]:
            what = f"{rows} rows, not {expected['rows']}"
        raise DataError(f"{path} has been changed since {writer} wrote it ({what}); {fix}")


def _rows(path: Path) -> int | str:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - a file too damaged to read is reported as such
        return "unreadable"
