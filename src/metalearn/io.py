"""Writes that never leave half a file: a stage's output appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metalearn.errors import MissingInputError


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``, on
    error it is deleted and ``path`` (an earlier result) is left as it was."""
    path = Path(path)
    tmp = _scratch_dir(path)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed onto ``path`` only on success."""
    path = Path(path)
    tmp = _scratch_file(path)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _scratch_file(path: Path) -> Path:
    """An empty file beside ``path`` (hidden, ending ``.tmp``: .dvcignore skips it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    Path(name).chmod(0o644)  # mkstemp's 0600 would survive the rename
    return Path(name)


def _scratch_dir(path: Path) -> Path:
    """An empty folder beside ``path`` (hidden, ending ``.tmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    return tmp


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(_json_text(data))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} is missing; run the stage that writes it (dvc repro)")
    return json.loads(path.read_text())


class Outputs:
    """A stage's outputs, committed together: each is written to a scratch path beside it
    (:meth:`file`, :meth:`folder`); :meth:`commit` moves them all into place once every one is
    complete, setting the earlier ones aside; leaving the ``with`` block normally deletes those,
    and an exception (after :meth:`commit` too: e.g. the MLflow run cannot be closed) puts them
    back and deletes the scratch paths, so a failed stage leaves its earlier outputs exactly as
    they were.

    >>> with Outputs() as out:                                    # doctest: +SKIP
    ...     write_model(out.file("models/b/maml.pt"))
    ...     out.commit()
    ...     run.finish()
    """

    def __init__(self) -> None:
        self._scratch: dict[Path, Path] = {}  # final path -> scratch path
        self._aside: dict[Path, Path | None] = {}  # final path -> its earlier version, if any

    def file(self, path: str | Path) -> Path:
        """A scratch path for the file ``path``."""
        return self._add(Path(path), _scratch_file(Path(path)))

    def folder(self, path: str | Path) -> Path:
        """An empty scratch folder for the folder ``path``."""
        return self._add(Path(path), _scratch_dir(Path(path)))

    def _add(self, path: Path, scratch: Path) -> Path:
        if path in self._scratch:
            raise ValueError(f"{path} is already an output of this stage")
        self._scratch[path] = scratch
        return scratch

    def write_json(self, path: str | Path, data: Any) -> None:
        self.file(path).write_text(_json_text(data))

    def commit(self) -> None:
        """Move every output into place (the earlier ones aside, until the block ends)."""
        for path, scratch in self._scratch.items():
            aside = None
            if path.exists() or path.is_symlink():
                aside = path.with_name(f".{path.name}.{os.getpid()}.old")
                _remove(aside)
                path.rename(aside)
            self._aside[path] = aside
            scratch.rename(path)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is None:
            for aside in self._aside.values():
                _remove(aside)
            return
        for path, aside in self._aside.items():  # undo a commit: the earlier outputs return
            _remove(path)
            if aside is not None:
                aside.rename(path)
        for scratch in self._scratch.values():
            _remove(scratch)


def _remove(path: Path | None) -> None:
    if path is None or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
