"""Fetch the real datasets into a folder, verified, preferring a local mirror.

Why this is more than ``urlretrieve``: the dataset hosts are slow, flaky or unreachable from
training machines, and a silently truncated or substituted archive would poison every result
downstream. So every file is

- taken from the mirror named by ``METALEARN_DATA_MIRROR`` (a directory or an ``http(s)://``
  prefix) when the mirror has it, else from its official URL (``metalearn.data.sources``);
- streamed into a temporary file next to its destination, with a timeout and retries with
  exponential backoff on network errors;
- accepted only if it matches the official pin, or, when it came from a mirror, the mirror's
  ``SHA256SUMS`` entry (mirrors may legitimately hold subsets or repacks); then renamed into place.

A failure never leaves a partial file behind, and ``download_dataset`` replaces a dataset folder
only once all of its files are in, so an earlier good copy survives a failed refresh.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import secrets
import shutil
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import EllipsisType
from typing import BinaryIO

from tqdm import tqdm

from metalearn import fingerprint
from metalearn.data.sources import SOURCES, RemoteFile, files_for
from metalearn.errors import StageError
from metalearn.io import read_json

log = logging.getLogger(__name__)

MIRROR_ENV = "METALEARN_DATA_MIRROR"
SUMS_NAME = "SHA256SUMS"
MANIFEST_NAME = "manifest.json"
CHUNK_BYTES = 1 << 20
_MAX_SUMS_BYTES = 1 << 20
_USER_AGENT = "metalearn-data-downloader/1"


class DownloadError(StageError, RuntimeError):
    """A dataset file could not be obtained or trusted; the message says what to do about it."""


class ChecksumError(DownloadError):
    """The bytes match neither the official pin nor the mirror's ``SHA256SUMS`` entry."""


class UnpinnedFileError(DownloadError):
    """Nothing vouches for the bytes: the official file has no pin and no mirror entry names it."""


# ----------------------------------------------------------------------------- mirror


@dataclass(frozen=True)
class Mirror:
    """A local stand-in for the official hosts: a directory or an ``http(s)://`` URL prefix.

    ``sha256sums`` holds the mirror's own ``SHA256SUMS`` (name -> sha256), which vouches for
    files that differ from the official archives on purpose (subsets, repacks).
    """

    location: str
    sha256sums: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def url_for(self, name: str) -> str:
        return f"{self.location}/{urllib.parse.quote(name)}"


def resolve_mirror(env: Mapping[str, str] = os.environ) -> Mirror | None:
    """The mirror named by ``METALEARN_DATA_MIRROR``, or None when the variable is unset/empty.

    A directory that does not exist is an error rather than "no mirror": falling back to the
    internet on a typo would be slow at best and impossible on an offline machine.
    """
    value = env.get(MIRROR_ENV, "").strip()
    return open_mirror(value) if value else None


def open_mirror(
    location: str | os.PathLike[str],
    *,
    timeout: float = 20,
    retries: int = 3,
    backoff: float = 1.0,
) -> Mirror:
    """Open a mirror (directory or URL prefix) and read its optional ``SHA256SUMS``."""
    text = os.fspath(location)
    if text.startswith(("http://", "https://")):
        prefix = text.rstrip("/")
        return Mirror(prefix, _read_url_sums(prefix, _Net.from_env(timeout, retries, backoff)))
    path = Path(text).expanduser()
    if not path.is_dir():
        raise DownloadError(_missing_mirror_message(text, path))
    sums_file = path / SUMS_NAME
    sums = parse_sha256sums(sums_file.read_text(), str(sums_file)) if sums_file.is_file() else {}
    return Mirror(str(path), sums)


def _missing_mirror_message(text: str, path: Path) -> str:
    problem = "is not a directory" if path.exists() else "does not exist"
    return (
        f"{MIRROR_ENV}={text!r}: that directory {problem}. Unset {MIRROR_ENV} to download from "
        "the official sources, or point it at a folder holding the official file names "
        f"(e.g. ml-100k.zip, images_background.zip), plus a {SUMS_NAME} file for any repacks."
    )


def parse_sha256sums(text: str, origin: str = SUMS_NAME) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<sha256>  <name>``, ``*`` marks binary mode; ``#`` comments).

    Malformed lines are errors, not skipped: this file decides what gets trusted.
    """
    sums: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not _is_hex(fields[0], 64):
            raise DownloadError(
                f"{origin}:{lineno}: expected '<sha256>  <name>' (sha256sum format), got {raw!r}"
            )
        name = fields[1].strip().removeprefix("*").removeprefix("./")
        sums[name] = fields[0].lower()
    return sums


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)


def _read_url_sums(prefix: str, net: _Net) -> dict[str, str]:
    url = f"{prefix}/{SUMS_NAME}"
    buffer = io.BytesIO()
    try:
        _download(url, buffer, SUMS_NAME, net)
    except _NotFound:
        return {}
    if buffer.tell() > _MAX_SUMS_BYTES:
        raise DownloadError(f"{url} is larger than {_MAX_SUMS_BYTES} bytes; not a SHA256SUMS file")
    return parse_sha256sums(buffer.getvalue().decode("utf-8"), url)


# ----------------------------------------------------------------------------- transfer


#: Seconds a download may wait on the network without receiving a byte, over all its attempts,
#: before it fails (a host that drops packets, a server that never answers); a transfer that
#: makes progress starts the count again. Default 50, so every network state fails in a minute.
PATIENCE_ENV = "METALEARN_NETWORK_SECONDS"


@dataclass(frozen=True)
class _Net:
    timeout: float  # each blocking operation (connect, a read)
    retries: int
    backoff: float
    patience: float = 50.0

    @classmethod
    def from_env(cls, timeout: float, retries: int, backoff: float) -> _Net:
        value = os.environ.get(PATIENCE_ENV, "").strip()
        try:
            patience = float(value) if value else cls.patience
        except ValueError:
            raise DownloadError(f"{PATIENCE_ENV}={value!r} is not a number of seconds") from None
        return cls(timeout, retries, backoff, patience)


@dataclass(frozen=True)
class _Digests:
    md5: str
    sha256: str
    size: int


class _NotFound(Exception):
    """HTTP 404/410: for a URL mirror this means "not here, use the official file"."""


class _Transient(Exception):
    """A server-side or transfer failure worth retrying (5xx, 429, short body)."""


_RETRYABLE = (
    _Transient,
    urllib.error.URLError,
    http.client.HTTPException,
    TimeoutError,
    ConnectionError,
)


def _download(url: str, out: BinaryIO, desc: str, net: _Net) -> _Digests:
    """Download ``url`` into ``out`` (rewound on each retry), retrying transient failures while
    the time spent waiting without progress stays under ``net.patience``."""
    attempts, waited = net.retries + 1, 0.0
    for attempt in range(attempts):
        start = time.monotonic()
        try:
            return _download_once(url, out, desc, max(0.1, min(net.timeout, net.patience - waited)))
        except _RETRYABLE as exc:
            waited = 0.0 if out.tell() > 0 else waited + time.monotonic() - start  # progress?
            delay = net.backoff * 2**attempt
            if attempt == attempts - 1 or waited + delay >= net.patience:
                raise DownloadError(
                    f"could not download {url} after {attempt + 1} attempt(s), "
                    f"{waited:.0f} s without an answer: {exc}. Check the network, or set "
                    f"{MIRROR_ENV} to a folder or URL prefix holding {desc}."
                ) from exc
            log.warning("%s: %s; retry %d/%d in %.1fs", url, exc, attempt + 1, net.retries, delay)
            time.sleep(delay)
            waited += delay
    raise AssertionError("unreachable")


def _download_once(url: str, out: BinaryIO, desc: str, timeout: float) -> _Digests:
    out.seek(0)
    out.truncate()
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _classify_http_error(url, exc) from exc
    with response:
        total = _content_length(response)
        digests = _copy_hashing(response, out, total, desc)
    if total is not None and digests.size != total:
        raise _Transient(f"connection closed after {digests.size} of {total} bytes")
    return digests


def _classify_http_error(url: str, exc: urllib.error.HTTPError) -> Exception:
    if exc.code in (404, 410):
        return _NotFound(f"{url}: HTTP {exc.code}")
    if exc.code in (408, 429) or exc.code >= 500:
        return _Transient(f"HTTP {exc.code} {exc.reason}")
    return DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (not retried)")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _copy_hashing(reader: BinaryIO, out: BinaryIO, total: int | None, desc: str) -> _Digests:
    """Copy in chunks, hashing on the way so the file is never read twice."""
    md5, sha256, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    with tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=not _stderr_is_terminal(),
    ) as bar:
        while chunk := reader.read(CHUNK_BYTES):
            out.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return _Digests(md5.hexdigest(), sha256.hexdigest(), size)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _from_mirror(mirror: Mirror, name: str, out: BinaryIO, net: _Net) -> _Digests | None:
    """Copy ``name`` from the mirror, or None when the mirror does not hold it."""
    if mirror.is_url:
        try:
            return _download(mirror.url_for(name), out, name, net)
        except _NotFound:
            log.info("%s is not on mirror %s; using the official URL", name, mirror.location)
            return None
    path = Path(mirror.location) / name
    if not path.is_file():
        return None
    with path.open("rb") as reader:
        return _copy_hashing(reader, out, path.stat().st_size, name)


def _from_official(file: RemoteFile, out: BinaryIO, net: _Net) -> _Digests:
    try:
        return _download(file.url, out, file.name, net)
    except _NotFound as exc:
        raise DownloadError(
            f"{exc}: the official {file.name} is gone. Find its new location and update "
            f"metalearn.data.sources, or set {MIRROR_ENV} to a folder holding {file.name}."
        ) from exc


def _transfer(
    file: RemoteFile, out: BinaryIO, mirror: Mirror | None, net: _Net
) -> tuple[str, _Digests]:
    if mirror is not None:
        digests = _from_mirror(mirror, file.name, out, net)
        if digests is not None:
            return "mirror", digests
    return "official", _from_official(file, out, net)


# ----------------------------------------------------------------------------- verification


def _verify(
    file: RemoteFile, got: _Digests, source: str, mirror: Mirror | None, allow_unpinned: bool
) -> None:
    """Accept official bytes, or mirror bytes the mirror's SHA256SUMS vouches for; else raise."""
    official = _matches_pins(file, got)
    mirror_sha = mirror.sha256sums.get(file.name) if source == "mirror" and mirror else None
    if official or (mirror_sha is not None and got.sha256 == mirror_sha):
        return
    if official is None and mirror_sha is None:
        if allow_unpinned:
            log.warning("%s accepted UNVERIFIED (allow_unpinned): sha256 %s", file.name, got.sha256)
            return
        raise UnpinnedFileError(_unpinned_message(file, got, source, mirror))
    raise ChecksumError(_mismatch_message(file, got, source, mirror, mirror_sha))


def _matches_pins(file: RemoteFile, got: _Digests) -> bool | None:
    """True/False when the file has official pins (all must match); None when it has none."""
    pins = {"md5": file.md5, "sha256": file.sha256}
    pins = {kind: value.lower() for kind, value in pins.items() if value is not None}
    if not pins:
        return None
    return all(getattr(got, kind) == value for kind, value in pins.items())


def _where(file: RemoteFile, source: str, mirror: Mirror | None) -> str:
    return f"mirror {mirror.location}" if source == "mirror" and mirror else file.url


def _sums_path(mirror: Mirror | None) -> str:
    return f"{mirror.location}/{SUMS_NAME}" if mirror else f"<mirror>/{SUMS_NAME}"


def _mismatch_message(
    file: RemoteFile, got: _Digests, source: str, mirror: Mirror | None, mirror_sha: str | None
) -> str:
    expected = [f"official {kind} {value}" for kind, value in _pins(file)]
    if mirror_sha is not None:
        expected.append(f"sha256 {mirror_sha} from {_sums_path(mirror)}")
    return (
        f"{file.name} (from {_where(file, source, mirror)}) failed verification.\n"
        f"  expected: {' or '.join(expected)}\n"
        f"  actual:   sha256 {got.sha256}, md5 {got.md5} ({got.size} bytes)\n"
        "What to do: download it again (the transfer may have been cut short or the source "
        "corrupted); if the mirror's copy is a legitimate subset or repack, add the line "
        f"'{got.sha256}  {file.name}' to {_sums_path(mirror)}."
    )


def _unpinned_message(file: RemoteFile, got: _Digests, source: str, mirror: Mirror | None) -> str:
    return (
        f"{file.name} (from {_where(file, source, mirror)}) cannot be verified: the official file "
        f"has no published checksum and no {SUMS_NAME} entry vouches for it (sha256 "
        f"{got.sha256}). Pin it in metalearn.data.sources, add '{got.sha256}  {file.name}' to "
        f"{_sums_path(mirror)} after checking where it came from, or pass allow_unpinned=True "
        "to accept unverified bytes knowingly."
    )


def _pins(file: RemoteFile) -> list[tuple[str, str]]:
    return [(kind, value) for kind, value in (("md5", file.md5), ("sha256", file.sha256)) if value]


# ----------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class _Fetched:
    path: Path
    sha256: str
    source: str
    size: int


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name next to ``path`` (same filesystem, so renames are atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.{tag}")


@contextmanager
def _staged_file(final: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A temp file next to ``final``; removed on exit unless it was renamed into place."""
    tmp = _sibling(final, "part")
    out = tmp.open("xb")
    try:
        yield tmp, out
    finally:
        out.close()
        tmp.unlink(missing_ok=True)


def _fetch(
    file: RemoteFile, dest_dir: Path, mirror: Mirror | None, net: _Net, allow_unpinned: bool
) -> _Fetched:
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / file.name
    with _staged_file(final) as (tmp, out):
        source, digests = _transfer(file, out, mirror, net)
        out.flush()
        os.fsync(out.fileno())
        out.close()
        _verify(file, digests, source, mirror, allow_unpinned)
        os.replace(tmp, final)
    log.info("%s: %s bytes from %s, sha256 %s", file.name, digests.size, source, digests.sha256)
    return _Fetched(final, digests.sha256, source, digests.size)


def fetch(
    file: RemoteFile,
    dest_dir: Path,
    mirror: Mirror | None = None,
    *,
    timeout: float = 20,
    retries: int = 3,
    backoff: float = 1.0,
    allow_unpinned: bool = False,
) -> Path:
    """Fetch one file into ``dest_dir`` and return its path, verified (see module docstring).

    The mirror is tried first; a file it does not hold comes from ``file.url``. ``retries`` is
    the number of extra attempts after a network failure, waiting ``backoff * 2**k`` seconds.
    ``timeout`` bounds each blocking network operation, in seconds. ``allow_unpinned=True``
    accepts a file nothing can verify (no official pin, no mirror entry), with a warning: use it
    only to bootstrap a pin, never in a pipeline.
    """
    net = _Net.from_env(timeout, retries, backoff)
    return _fetch(file, Path(dest_dir), mirror, net, allow_unpinned).path


# ----------------------------------------------------------------------------- folders


@contextmanager
def _staged_dir(final: Path) -> Iterator[Path]:
    """A temp directory next to ``final``; removed on exit unless it was renamed into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``, replacing an existing ``final`` only once ``new`` is complete.

    POSIX cannot atomically exchange two directories, so the old one is renamed aside first and
    put back if the second rename fails; readers see either the old or the new folder, or
    (for an instant) none, never a mix.
    """
    if not final.exists():
        os.replace(new, final)
        return
    old = _sibling(final, "old")
    os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def download_dataset(
    dataset: str,
    dest_dir: Path,
    parts: Sequence[int] | None = None,
    mirror: Mirror | None | EllipsisType = ...,
    *,
    allow_unpinned: bool = False,
    timeout: float = 20,
    retries: int = 3,
    backoff: float = 1.0,
) -> dict[str, dict[str, str | int]]:
    """Fetch every file of ``dataset`` into ``dest_dir`` and return (and write) its manifest.

    The manifest, ``{name: {"sha256", "source": "mirror"|"official", "bytes"}}``, is also written
    as ``dest_dir/manifest.json`` so later stages can record exactly which bytes they used
    (repacks from a mirror differ from the official files). ``mirror=...`` (the default) means
    "from ``METALEARN_DATA_MIRROR``"; ``None`` forces the official URLs. The whole folder is
    built beside ``dest_dir`` and renamed into place at the end: a failure leaves any earlier
    ``dest_dir`` untouched.
    """
    files = files_for(dataset, parts)
    chosen = resolve_mirror() if mirror is ... else mirror
    net = _Net.from_env(timeout, retries, backoff)
    dest_dir = Path(dest_dir)
    with _staged_dir(dest_dir) as staging:
        manifest = {}
        for file in files:
            got = _fetch(file, staging, chosen, net, allow_unpinned)
            manifest[file.name] = {"sha256": got.sha256, "source": got.source, "bytes": got.size}
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (staging / MANIFEST_NAME).write_text(text)
        _swap_into_place(staging, dest_dir)
    return manifest


def verify_downloads(dataset: str, raw_dir: str | Path) -> None:
    """Every file of ``raw_dir``'s manifest is there as download@<dataset> fetched it; else one
    line naming the file and the fix. A synthetic family has nothing downloaded to check."""
    if dataset not in SOURCES:
        return
    raw_dir = Path(raw_dir)
    manifest = read_json(raw_dir / MANIFEST_NAME)
    fix = f"restore it: dvc checkout {raw_dir}, or fetch it again: dvc repro -f download@{dataset}"
    records = {
        raw_dir / name: {"sha256": entry["sha256"]}
        for name, entry in manifest.items()
        if isinstance(entry, dict)
    }
    fingerprint.verify(records, f"download@{dataset}", fix)


# ----------------------------------------------------------------------------- zip extraction


def safe_extract_zip(archive: Path, dest: Path) -> list[Path]:
    """Extract ``archive`` into ``dest`` (replacing it) and return the extracted files' paths.

    Every entry is checked before anything is written: absolute paths, ``..`` components and
    symlinks are refused (they could write outside ``dest``), then every entry's CRC is checked
    so a truncated or corrupt download fails here, clearly, rather than as garbage later. The
    files are extracted into a temp folder beside ``dest`` and renamed into place.
    """
    archive, dest = Path(archive), Path(dest)
    with _open_zip(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info, archive, dest)
        _check_crcs(zf, archive)
        with _staged_dir(dest) as staging:
            _extract_all(zf, staging, archive)
            _swap_into_place(staging, dest)
    return [dest / info.filename for info in members if not info.is_dir()]


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(_corrupt_message(archive, exc)) from exc


def _check_member(info: zipfile.ZipInfo, archive: Path, dest: Path) -> None:
    name = info.filename
    reason = _unsafe_reason(name, info.external_attr >> 16)
    if reason is not None:
        raise DownloadError(
            f"{archive}: refusing to extract entry {name!r}: it is {reason}, which could write "
            f"outside {dest}. Nothing was extracted. This is not a trustworthy copy of the "
            "dataset: delete it and download it again from the official source."
        )


def _unsafe_reason(name: str, mode: int) -> str | None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":" and posix[0].isalpha()):
        return "an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "a path with a '..' component"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return None


def _check_crcs(zf: zipfile.ZipFile, archive: Path) -> None:
    try:
        bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(_corrupt_message(archive, exc)) from exc
    if bad is not None:
        raise DownloadError(_corrupt_message(archive, f"CRC check failed for entry {bad!r}"))


def _extract_all(zf: zipfile.ZipFile, target: Path, archive: Path) -> None:
    try:
        zf.extractall(target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(_corrupt_message(archive, exc)) from exc


def _corrupt_message(archive: Path, detail: object) -> str:
    return (
        f"{archive} is truncated or corrupt ({detail}). Delete it and download it again "
        "(download_dataset re-fetches it and verifies its checksum)."
    )
