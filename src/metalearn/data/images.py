"""Read the official Omniglot and MiniImageNet files into plain, safe NumPy arrays.

Omniglot (``images_background.zip`` + ``images_evaluation.zip``)
    PNGs at ``<archive>/<Alphabet>/<characterNN>/<drawing>.png`` (105 x 105, mode "1": white
    background, black strokes) are decoded straight from the zips, never extracted. Every entry
    name is checked first: an absolute path or a ``..`` component refuses the whole archive. Each
    drawing is resized to ``image_size`` with ``PIL.Image.resize(..., LANCZOS)`` exactly as the
    MAML reference code (``data/omniglot_resized/resize_images.py``) does. On a mode-"1" image
    Pillow resamples with nearest neighbour whatever filter is asked for, so the result is binary
    and identical to the reference's 28 x 28 PNGs. Convention: **1 = ink, 0 = background** (the
    PNG's black pixels become 1: the reference's ``1 - image``). A PNG in another mode is first
    made binary (grey >= 128 is background). Order is deterministic: classes (one per
    ``(alphabet, character)``) sorted by alphabet then character name, drawings by file name.

MiniImageNet (``mini-imagenet-cache-{train,validation,test}.pkl``)
    Pickles are untrusted: :func:`load_pickle` uses :class:`RestrictedUnpickler`, whose
    ``find_class`` admits only the NumPy array reconstruction globals (listed in
    :data:`ALLOWED_GLOBALS`, plus ``_codecs.encode`` restricted to latin1 text -> bytes, which
    protocol-2 pickles use for raw bytes); anything else (``os.system``, ``builtins.eval``,
    ...) raises :class:`UnsafePickleError` before it can be called. The result is validated as
    ``{"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [row indices]}}`` and written
    once by :func:`convert_miniimagenet` as ``images_{split}.npy`` (rows grouped by class, classes
    sorted by wnid), which later stages read with ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from metalearn.errors import DataError, MissingInputError

OMNIGLOT_ARCHIVES = ("images_background.zip", "images_evaluation.zip")
MINIIMAGENET_FILES = {
    "train": "mini-imagenet-cache-train.pkl",
    "val": "mini-imagenet-cache-validation.pkl",
    "test": "mini-imagenet-cache-test.pkl",
}
MINIIMAGENET_SHAPE = (84, 84, 3)
SPLITS = ("train", "val", "test")
_MAX_PNG_BYTES = 10 * 2**20  # an Omniglot PNG is ~1 KB; refuse absurd (zip-bomb) members
_MAX_SIDE = 1024  # pixels; official drawings are 105 x 105


class ArchiveError(DataError):
    """An Omniglot archive is missing, corrupt, unsafe or not in the official layout."""


class UnsafePickleError(DataError):
    """A pickle asked for a global that the MiniImageNet format does not need."""


class PickleFormatError(DataError):
    """A MiniImageNet pickle loaded safely but does not hold the expected structure."""


# ---------------------------------------------------------------------------------------- Omniglot


@dataclass(frozen=True)
class OmniglotImages:
    """All drawings of the archives read: ``images [N, S, S]`` uint8 (1 = ink, 0 = background),
    ``character [N]`` int64 class id (index into ``names``, ``"Alphabet/characterNN"``)."""

    images: np.ndarray
    character: np.ndarray
    names: list[str]

    @property
    def counts(self) -> np.ndarray:
        """Drawings per class, ``[len(names)]``."""
        return np.bincount(self.character, minlength=len(self.names))


def _check_member_name(archive: Path, name: str) -> PurePosixPath:
    """The entry's path, or :class:`ArchiveError` for an absolute path or a ``..`` component."""
    unix = name.replace("\\", "/")
    path = PurePosixPath(unix)
    if unix.startswith("/") or re.match(r"^[A-Za-z]:", unix) or ".." in path.parts:
        raise ArchiveError(
            f"{archive}: refusing unsafe entry {name!r} (absolute path or '..'); "
            "the archive is not a genuine Omniglot download"
        )
    return path


def to_ink(image: Image.Image, image_size: int) -> np.ndarray:
    """One Omniglot drawing as ``[image_size, image_size]`` uint8, 1 = ink, 0 = background."""
    if image.mode != "1":
        image = Image.fromarray(np.asarray(image.convert("L")) >= 128)  # True = white background
    if image.size != (image_size, image_size):
        # As the MAML reference; Pillow uses nearest neighbour for mode "1" images.
        image = image.resize((image_size, image_size), resample=Image.Resampling.LANCZOS)
    return (~np.asarray(image, dtype=bool)).astype(np.uint8)


def _read_archive(archive: Path, image_size: int) -> dict[tuple[str, str], list[np.ndarray]]:
    """``{(alphabet, character): [drawing, ...]}`` of one zip, drawings sorted by file name."""
    if not archive.is_file():
        raise ArchiveError(f"Omniglot archive not found: {archive}")
    found: dict[tuple[str, str], list[tuple[str, zipfile.ZipInfo]]] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:  # check every name before reading anything
                _check_member_name(archive, info.filename)
            for info in members:
                path = PurePosixPath(info.filename.replace("\\", "/"))
                if info.is_dir() or path.suffix.lower() != ".png":
                    continue
                if len(path.parts) != 4:
                    raise ArchiveError(
                        f"{archive}: entry {info.filename!r} is not at "
                        "<archive>/<Alphabet>/<character>/<drawing>.png (the official layout)"
                    )
                if info.file_size > _MAX_PNG_BYTES:
                    raise ArchiveError(
                        f"{archive}: entry {info.filename!r} unpacks to {info.file_size} bytes; "
                        "an Omniglot PNG is about 1 KB"
                    )
                _, alphabet, character, drawing = path.parts
                found.setdefault((alphabet, character), []).append((drawing, info))
            result = {}
            for key in sorted(found):
                drawings = []
                for _, info in sorted(found[key], key=lambda item: item[0]):
                    try:
                        data = zf.read(info)
                        with Image.open(io.BytesIO(data)) as image:
                            if max(image.size) > _MAX_SIDE:  # checked before decoding
                                raise ArchiveError(
                                    f"{archive}: entry {info.filename!r} is {image.size[0]} x "
                                    f"{image.size[1]} pixels; an Omniglot drawing is 105 x 105"
                                )
                            image.load()
                            drawings.append(to_ink(image, image_size))
                    except (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as e:
                        raise ArchiveError(
                            f"{archive}: entry {info.filename!r} is not a readable PNG ({e})"
                        ) from e
                result[key] = drawings
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise ArchiveError(
            f"{archive} is corrupt or truncated ({type(e).__name__}: {e}); "
            "download it again (the download stage verifies its checksum)"
        ) from e
    if not result:
        raise ArchiveError(f"{archive} holds no PNG drawings in the official Omniglot layout")
    return result


def read_omniglot(
    raw_dir: str | Path,
    image_size: int = 28,
    archives: tuple[str, ...] = OMNIGLOT_ARCHIVES,
) -> OmniglotImages:
    """Every drawing of ``archives`` (both official zips by default) under ``raw_dir``.

    Classes are the ``(alphabet, character)`` pairs of all archives together, sorted by name;
    an alphabet/character present in two archives is an error (the official ones are disjoint).
    """
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    raw_dir = Path(raw_dir)
    merged: dict[tuple[str, str], list[np.ndarray]] = {}
    origin: dict[tuple[str, str], str] = {}
    for name in archives:
        for key, drawings in _read_archive(raw_dir / name, image_size).items():
            if key in merged:
                raise ArchiveError(
                    f"character {'/'.join(key)} is in both {origin[key]} and {name}; "
                    "the Omniglot archives must hold disjoint alphabets"
                )
            merged[key], origin[key] = drawings, name
    keys = sorted(merged)
    images = np.stack([d for key in keys for d in merged[key]])
    character = np.repeat(np.arange(len(keys), dtype=np.int64), [len(merged[k]) for k in keys])
    return OmniglotImages(images, character, [f"{a}/{c}" for a, c in keys])


# ------------------------------------------------------------------------------------ MiniImageNet


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (latin1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(
            f"_codecs.encode is admitted only as (str, 'latin1'), not {encoding!r}"
        )
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    core = getattr(np, "_core", None)  # numpy >= 2; numpy.core is a deprecated alias there
    if core is None:  # numpy 1.x
        core = np.core
    multiarray = core.multiarray
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray}
    allowed[("numpy", "dtype")] = np.dtype
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        # a NumPy scalar (dtype + raw bytes), e.g. an np.int64 index in class_dict
        allowed[(module, "scalar")] = multiarray.scalar
    allowed[("_codecs", "encode")] = _latin1_bytes  # bytes in protocol-2 pickles
    return allowed


#: ``(module, name) -> object``: the only globals a MiniImageNet pickle may load.
ALLOWED_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (NumPy array reconstruction).

    Dicts, lists, strings, ints, bytes and tuples are built by pickle opcodes, not globals, so
    they need nothing here. Every other global (and every ``__reduce__`` callable, which is
    looked up through ``find_class``) raises :class:`UnsafePickleError` before it can run.
    """

    def __init__(self, file: Any, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 NumPy pickles
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load the global {module}.{name}; a MiniImageNet "
                "pickle may only reconstruct NumPy arrays (the file is not a genuine download)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing a persistent id {pid!r}")


def load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; corrupt files raise ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"MiniImageNet file not found: {path}")
    with path.open("rb") as f:
        try:
            return RestrictedUnpickler(f, source=str(path)).load()
        except UnsafePickleError as e:
            if str(path) in str(e):
                raise
            raise UnsafePickleError(f"{path}: {e}") from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            IndexError,
            OverflowError,
        ) as e:
            raise PickleFormatError(
                f"{path} is not a readable pickle ({type(e).__name__}: {e}); "
                "it may be truncated: download it again"
            ) from e


def validate_miniimagenet(data: Any, source: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(image_data uint8 [N, 84, 84, 3], {wnid: int64 indices})`` or :class:`PickleFormatError`.

    Indices must be integers in ``[0, N)``; every class non-empty, none listed twice.
    """

    def fail(why: str) -> PickleFormatError:
        return PickleFormatError(
            f"{source}: {why}; expected a dict with 'image_data' (uint8 array [N, 84, 84, 3]) and "
            "'class_dict' ({wnid: [image indices]})"
        )

    if not isinstance(data, dict):
        raise fail(f"top-level object is a {type(data).__name__}, not a dict")
    missing = [k for k in ("image_data", "class_dict") if k not in data]
    if missing:
        raise fail(f"missing key(s) {missing} (keys: {sorted(map(str, data))})")
    images = data["image_data"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise fail(f"image_data is {kind}, not a uint8 array")
    if images.ndim != 4 or images.shape[1:] != MINIIMAGENET_SHAPE:
        raise fail(f"image_data has shape {list(images.shape)}")
    classes = data["class_dict"]
    if not isinstance(classes, dict) or not classes:
        raise fail("class_dict is not a non-empty dict")
    n = images.shape[0]
    out: dict[str, np.ndarray] = {}
    for wnid, rows in classes.items():
        if not isinstance(wnid, str):
            raise fail(f"class name {wnid!r} is not a string")
        if isinstance(rows, np.ndarray):
            rows = rows.tolist()
        if not isinstance(rows, list | tuple) or not rows:
            raise fail(f"class {wnid}: indices are not a non-empty list")
        if not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in rows):
            raise fail(f"class {wnid}: indices must be integers")
        idx = np.asarray(rows, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= n:
            raise fail(f"class {wnid}: index {int(idx.max())} or {int(idx.min())} outside [0, {n})")
        out[wnid] = idx
    listed = np.concatenate(list(out.values()))
    if np.unique(listed).size != listed.size:
        raise fail("an image index is listed more than once")
    return images, out


@dataclass(frozen=True)
class SplitImages:
    """One split written by :func:`convert_miniimagenet`: class ``i`` (``names[i]``) has the
    rows ``start[i] : start[i] + count[i]`` of ``file``."""

    file: str
    names: list[str]
    start: np.ndarray
    count: np.ndarray


def convert_miniimagenet(raw_dir: str | Path, out_dir: str | Path) -> dict[str, SplitImages]:
    """Read the three pickles of ``raw_dir`` safely and write ``out_dir/images_{split}.npy``
    (uint8 ``[N, 84, 84, 3]``, rows grouped by class, classes sorted by wnid). The splits must
    have disjoint classes. One pickle is in memory at a time."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    result: dict[str, SplitImages] = {}
    seen: dict[str, str] = {}
    for split, name in MINIIMAGENET_FILES.items():
        path = raw_dir / name
        images, classes = validate_miniimagenet(load_pickle(path), str(path))
        for wnid in classes:
            if wnid in seen:
                raise PickleFormatError(
                    f"class {wnid} is in both {seen[wnid]} and {name}; the splits must be disjoint"
                )
            seen[wnid] = name
        names = sorted(classes)
        count = np.array([classes[w].size for w in names], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        file = f"images_{split}.npy"
        target = np.lib.format.open_memmap(
            out_dir / file, mode="w+", dtype=np.uint8, shape=(int(count.sum()), *images.shape[1:])
        )
        for wnid, s, c in zip(names, start, count, strict=True):
            target[s : s + c] = images[classes[wnid]]
        target.flush()
        del target, images
        result[split] = SplitImages(file, names, start, count)
    return result


def channel_stats(images: np.ndarray, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and (population) std of uint8 ``[N, H, W, C]`` images, in [0, 1]
    units (pixel / 255), from per-channel histograms (chunked: no float copy of the array)."""
    channels = images.shape[-1]
    hist = np.zeros((channels, 256), dtype=np.int64)
    for lo in range(0, images.shape[0], chunk):
        block = np.asarray(images[lo : lo + chunk]).reshape(-1, channels)
        for c in range(channels):
            hist[c] += np.bincount(block[:, c], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum(1)
    if not total.all():
        raise DataError("channel_stats needs at least one image")
    mean = (hist * values).sum(1) / total
    var = (hist * (values - mean[:, None]) ** 2).sum(1) / total
    return mean.tolist(), np.sqrt(var).tolist()
