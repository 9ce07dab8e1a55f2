"""Dataset downloads: mirror first, verified by official pin or SHA256SUMS, atomic, safe unzip.

No network: mirrors are tmp folders, and "official" URLs point at a local http.server thread.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalearn.data import download as dl
from metalearn.data import sources
from metalearn.data.download import (
    ChecksumError,
    DownloadError,
    Mirror,
    UnpinnedFileError,
    download_dataset,
    fetch,
    open_mirror,
    resolve_mirror,
    safe_extract_zip,
)
from metalearn.data.sources import RemoteFile, files_for

ROOT = Path(__file__).resolve().parents[2]

NAME = "tiny.zip"
DEAD_URL = "http://127.0.0.1:9/never-contacted"


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


ZIP_BYTES = make_zip({"tiny/a.txt": b"alpha\n", "tiny/b.txt": b"beta\n"})
ZIP_MD5 = hashlib.md5(ZIP_BYTES).hexdigest()
ZIP_SHA = hashlib.sha256(ZIP_BYTES).hexdigest()
WRONG_MD5 = "0" * 32


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def mirror_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / NAME).write_bytes(ZIP_BYTES)
    (folder / dl.SUMS_NAME).write_text(f"# repacks\n{ZIP_SHA}  {NAME}\n")
    return folder


# ----------------------------------------------------------------------------- directory mirror


def test_mirror_file_accepted_via_official_md5(tmp_path, mirror_dir):
    (mirror_dir / dl.SUMS_NAME).unlink()
    dest = tmp_path / "dest"
    path = fetch(RemoteFile(NAME, DEAD_URL, md5=ZIP_MD5), dest, open_mirror(mirror_dir))
    assert path == dest / NAME and path.read_bytes() == ZIP_BYTES
    assert listing(dest) == [NAME]


def test_mirror_file_accepted_via_mirror_sha256sums(tmp_path, mirror_dir):
    mirror = open_mirror(mirror_dir)
    assert mirror.sha256sums == {NAME: ZIP_SHA} and not mirror.is_url
    path = fetch(RemoteFile(NAME, DEAD_URL, md5=WRONG_MD5), tmp_path / "dest", mirror)
    assert path.read_bytes() == ZIP_BYTES


def test_mismatch_raises_with_expected_and_actual_and_leaves_nothing(tmp_path, mirror_dir):
    other_sha = "ab" * 32
    (mirror_dir / dl.SUMS_NAME).write_text(f"{other_sha} *{NAME}\n")
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError) as err:
        fetch(RemoteFile(NAME, DEAD_URL, md5=WRONG_MD5), dest, open_mirror(mirror_dir))
    message = str(err.value)
    for text in (NAME, WRONG_MD5, other_sha, ZIP_SHA, "SHA256SUMS", "again"):
        assert text in message
    assert listing(dest) == []


def test_unpinned_file_refused_unless_allowed(tmp_path, mirror_dir):
    (mirror_dir / dl.SUMS_NAME).unlink()
    file = RemoteFile(NAME, DEAD_URL)
    mirror = open_mirror(mirror_dir)
    with pytest.raises(UnpinnedFileError, match="no published checksum"):
        fetch(file, tmp_path / "dest", mirror)
    assert listing(tmp_path / "dest") == []
    assert fetch(file, tmp_path / "dest", mirror, allow_unpinned=True).read_bytes() == ZIP_BYTES


def test_resolve_mirror_from_environment(tmp_path, mirror_dir):
    assert resolve_mirror({}) is None
    assert resolve_mirror({dl.MIRROR_ENV: "  "}) is None
    assert resolve_mirror({dl.MIRROR_ENV: str(mirror_dir)}) == Mirror(
        str(mirror_dir), {NAME: ZIP_SHA}
    )
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DownloadError) as err:
        resolve_mirror({dl.MIRROR_ENV: str(missing)})
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert f"Unset {dl.MIRROR_ENV}" in message and "official file names" in message


def test_malformed_sha256sums_is_an_error(mirror_dir):
    (mirror_dir / dl.SUMS_NAME).write_text("not-a-hash  tiny.zip\n")
    with pytest.raises(DownloadError, match=r"SHA256SUMS:1"):
        open_mirror(mirror_dir)


# ----------------------------------------------------------------------------- HTTP


class _Server:
    """Serves ``files`` (path -> bytes); each path in ``fail_first`` answers 500 once, each in
    ``cut_first`` once sends half its body and closes the connection."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail_first: set[str] = set()
        self.cut_first: set[str] = set()
        self.requests: list[str] = []
        self.base = ""


@pytest.fixture
def server() -> Iterator[_Server]:
    state = _Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            state.requests.append(self.path)
            if self.path in state.fail_first:
                state.fail_first.discard(self.path)
                self.send_error(500)
            elif self.path in state.files:
                body = state.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in state.cut_first:
                    state.cut_first.discard(self.path)
                    body, self.close_connection = body[: len(body) // 2], True
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_url_prefix_mirror_with_sha256sums(tmp_path, server):
    server.files["/m/SHA256SUMS"] = f"{ZIP_SHA}  {NAME}\n".encode()
    server.files[f"/m/{NAME}"] = ZIP_BYTES
    mirror = resolve_mirror({dl.MIRROR_ENV: f"{server.base}/m/"})
    assert mirror.is_url and mirror.sha256sums == {NAME: ZIP_SHA}
    path = fetch(RemoteFile(NAME, DEAD_URL, md5=WRONG_MD5), tmp_path / "dest", mirror, backoff=0)
    assert path.read_bytes() == ZIP_BYTES


def test_official_url_retried_after_a_500(tmp_path, server):
    server.files[f"/official/{NAME}"] = ZIP_BYTES
    server.fail_first.add(f"/official/{NAME}")
    file = RemoteFile(NAME, f"{server.base}/official/{NAME}", md5=ZIP_MD5)
    assert fetch(file, tmp_path / "dest", timeout=5, backoff=0).read_bytes() == ZIP_BYTES
    assert server.requests == [f"/official/{NAME}"] * 2


def test_body_cut_short_is_retried(tmp_path, server):
    server.files[f"/official/{NAME}"] = ZIP_BYTES
    server.cut_first.add(f"/official/{NAME}")
    file = RemoteFile(NAME, f"{server.base}/official/{NAME}", md5=ZIP_MD5)
    assert fetch(file, tmp_path / "dest", timeout=5, backoff=0).read_bytes() == ZIP_BYTES
    assert len(server.requests) == 2 and listing(tmp_path / "dest") == [NAME]


def test_url_mirror_without_the_file_falls_back_to_official(tmp_path, server):
    server.files[f"/official/{NAME}"] = ZIP_BYTES
    mirror = open_mirror(f"{server.base}/empty", backoff=0)  # no SHA256SUMS there: 404 is fine
    file = RemoteFile(NAME, f"{server.base}/official/{NAME}", md5=ZIP_MD5)
    manifest_dir = tmp_path / "dest"
    assert fetch(file, manifest_dir, mirror, backoff=0).read_bytes() == ZIP_BYTES
    assert server.requests[-2:] == [f"/empty/{NAME}", f"/official/{NAME}"]


def test_server_error_without_retries_gives_up_cleanly(tmp_path, server):
    file = RemoteFile(NAME, f"{server.base}/official/{NAME}", md5=ZIP_MD5)
    server.files[f"/official/{NAME}"] = ZIP_BYTES
    server.fail_first.add(f"/official/{NAME}")
    with pytest.raises(DownloadError, match="after 1 attempt"):
        fetch(file, tmp_path / "dest", retries=0, backoff=0)
    assert listing(tmp_path / "dest") == []


# ----------------------------------------------------------------------------- download_dataset


@pytest.fixture
def tiny_dataset(monkeypatch):
    files = [RemoteFile(NAME, DEAD_URL, md5=WRONG_MD5)]
    monkeypatch.setitem(sources.SOURCES, "tiny", files)
    return files


def test_download_dataset_writes_manifest(tmp_path, mirror_dir, tiny_dataset):
    dest = tmp_path / "data" / "tiny"
    manifest = download_dataset("tiny", dest, mirror=open_mirror(mirror_dir))
    expected = {NAME: {"sha256": ZIP_SHA, "source": "mirror", "bytes": len(ZIP_BYTES)}}
    assert manifest == expected
    assert json.loads((dest / dl.MANIFEST_NAME).read_text()) == expected
    assert listing(dest) == sorted([NAME, dl.MANIFEST_NAME])
    assert listing(dest.parent) == ["tiny"]


def test_download_dataset_reads_mirror_from_environment(
    tmp_path, mirror_dir, tiny_dataset, monkeypatch
):
    monkeypatch.setenv(dl.MIRROR_ENV, str(mirror_dir))
    assert download_dataset("tiny", tmp_path / "tiny")[NAME]["source"] == "mirror"


def test_failed_download_keeps_the_earlier_folder(tmp_path, mirror_dir, tiny_dataset):
    dest = tmp_path / "data" / "tiny"
    dest.mkdir(parents=True)
    (dest / "earlier.txt").write_text("keep me")
    (mirror_dir / dl.SUMS_NAME).unlink()
    with pytest.raises(ChecksumError):
        download_dataset("tiny", dest, mirror=open_mirror(mirror_dir))
    assert listing(dest) == ["earlier.txt"]
    assert listing(dest.parent) == ["tiny"]


def test_download_dataset_replaces_an_earlier_folder(tmp_path, mirror_dir, tiny_dataset):
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    download_dataset("tiny", dest, mirror=open_mirror(mirror_dir))
    assert listing(dest) == sorted([NAME, dl.MANIFEST_NAME])
    assert listing(tmp_path) == ["mirror", "tiny"]


# ----------------------------------------------------------------------------- safe_extract_zip


def test_safe_extract_zip_extracts_and_replaces(tmp_path):
    archive = tmp_path / NAME
    archive.write_bytes(ZIP_BYTES)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    paths = safe_extract_zip(archive, dest)
    assert paths == [dest / "tiny/a.txt", dest / "tiny/b.txt"]
    assert (dest / "tiny/a.txt").read_bytes() == b"alpha\n"
    assert not (dest / "stale.txt").exists()
    assert listing(tmp_path) == sorted([NAME, "out"])


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("good.txt", b"fine")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "entry"),
    [
        (make_zip({"good.txt": b"fine", "../evil": b"x"}), "../evil"),
        (make_zip({"good.txt": b"fine", "a/../../evil": b"x"}), "a/../../evil"),
        (make_zip({"good.txt": b"fine", "/abs/evil": b"x"}), "/abs/evil"),
        (_symlink_zip(), "link"),
    ],
    ids=["zip-slip", "nested-slip", "absolute", "symlink"],
)
def test_unsafe_entries_are_refused_before_writing(tmp_path, data, entry):
    work = tmp_path / "work"
    work.mkdir()
    archive = tmp_path / "bad.zip"
    archive.write_bytes(data)
    with pytest.raises(DownloadError) as err:
        safe_extract_zip(archive, work / "out")
    assert repr(entry) in str(err.value) and "bad.zip" in str(err.value)
    assert listing(work) == [] and not (tmp_path / "evil").exists()


def test_truncated_zip_is_a_clear_error(tmp_path):
    archive = tmp_path / "cut.zip"
    archive.write_bytes(ZIP_BYTES[: len(ZIP_BYTES) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt") as err:
        safe_extract_zip(archive, tmp_path / "out")
    assert "cut.zip" in str(err.value) and "download it again" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_corrupt_crc_is_a_clear_error(tmp_path):
    payload = b"0123456789" * 10
    data = bytearray(make_zip({"data.bin": payload}, zipfile.ZIP_STORED))
    at = bytes(data).index(payload)
    data[at] ^= 0xFF
    archive = tmp_path / "crc.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="CRC") as err:
        safe_extract_zip(archive, tmp_path / "out")
    assert "crc.zip" in str(err.value) and "download it again" in str(err.value)
    assert listing(tmp_path) == ["crc.zip"]


# ----------------------------------------------------------------------------- sources


def test_files_for_jester_parts_and_unknown_dataset():
    (part1,) = files_for("jester", [1])
    assert part1.name == "jester_dataset_1_1.zip" and part1.url.endswith("/jester_dataset_1_1.zip")
    assert [f.name for f in files_for("jester")] == [f"jester_dataset_1_{i}.zip" for i in (1, 2, 3)]
    with pytest.raises(ValueError, match="subset of"):
        files_for("jester", [4])
    with pytest.raises(ValueError, match="only applies to 'jester'"):
        files_for("omniglot", [1])
    with pytest.raises(ValueError) as err:
        files_for("imagenet")
    for name in ("jester", "movielens100k", "movielens1m", "omniglot", "miniimagenet"):
        assert name in str(err.value)


def test_registry_is_well_formed():
    hex_digits = set("0123456789abcdef")
    for files in sources.SOURCES.values():
        for f in files:
            assert f.url.startswith("https://") and f.url.endswith("/" + f.name)
            for value, length in ((f.md5, 32), (f.sha256, 64)):
                assert value is None or (len(value) == length and set(value) <= hex_digits)
    assert all(
        f.pinned for name in ("jester", "movielens100k", "omniglot") for f in files_for(name)
    )


# ----------------------------------------------------------------------------- real mirror


def _real_mirror() -> Path | None:
    env = os.environ.get("METALEARN_TEST_MIRROR")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets"
    return path if path.is_dir() else None


@pytest.mark.skipif(_real_mirror() is None, reason="no real dataset mirror on this machine")
@pytest.mark.parametrize("dataset", ["movielens100k", "omniglot"])
def test_real_mirror_download(tmp_path, dataset):
    root = _real_mirror()
    mirror = open_mirror(root)
    manifest = download_dataset(dataset, tmp_path / dataset, mirror=mirror)
    names = [f.name for f in files_for(dataset)]
    assert sorted(manifest) == sorted(names)
    for name in names:
        entry = manifest[name]
        assert entry["source"] == "mirror"
        assert entry["bytes"] == (root / name).stat().st_size
        assert entry["sha256"] == mirror.sha256sums[name]  # docs/data.md: these are repacks
        assert zipfile.ZipFile(tmp_path / dataset / name).testzip() is None
    on_disk = json.loads((tmp_path / dataset / dl.MANIFEST_NAME).read_text())
    assert on_disk == manifest


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A host that takes connections and never answers (as one whose packets are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel completes the handshakes; nobody reads or replies
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_host_that_never_answers_fails_once_the_patience_is_spent(tmp_path, silent_host):
    net = dl._Net(timeout=20, retries=3, backoff=0.2, patience=1.5)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"after \d attempt\(s\), \d s without an answer"):
        dl._download(f"{silent_host}/ml-100k.zip", io.BytesIO(), "ml-100k.zip", net)
    assert time.monotonic() - start < 3
    assert dl._Net.from_env(20, 3, 1.0).patience <= 55  # the default: a failure within a minute


def test_the_download_stage_gives_up_on_a_silent_host_in_bounded_time(tmp_path, silent_host):
    """Through the stage script: a URL mirror that never answers, a patience of 2 s."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "METALEARN_"))},
        "METALEARN_DATA_MIRROR": silent_host,
        dl.PATIENCE_ENV: "2",
    }
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "pipeline/download.py"), "dataset=movielens100k"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - start < 15
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: could not download" in done.stderr and "without an answer" in done.stderr
    assert not (tmp_path / "data").exists()
