"""The official files of each real dataset, with the checksums they are pinned to.

A pin is what lets ``metalearn.data.download`` refuse a truncated, tampered-with or silently
changed download. Where each pin comes from:

- MovieLens 100K / 1M (md5): the ``.md5`` files GroupLens publishes next to each archive
  (``https://files.grouplens.org/datasets/movielens/ml-100k.zip.md5``, ``ml-1m.zip.md5``); many
  public loaders pin the same two values.
- Omniglot (md5): torchvision, ``pytorch/vision`` ``torchvision/datasets/omniglot.py``
  (``Omniglot.zips_md5``), for the same ``brendenlake/omniglot`` ``python/*.zip`` files.
- Jester dataset 1, parts 1-3 (sha256): the OmniRec recommender toolkit's Jester loader
  (``omnirec.data_loaders``, class ``Jester``, entries ``Jester1_1`` .. ``Jester1_3``), which
  pins the Berkeley ``dataset/archive/jester_dataset_1_{1,2,3}.zip`` files as captured by the
  Internet Archive. An independent recovery of the same files (a research log that re-downloaded
  them through ``web.archive.org/.../id_/`` and checked the matrix is 73,421 x 100) reports the
  identical three sha256 values and sizes 4,171,628 / 3,924,205 / 2,151,299 bytes.
- MiniImageNet (learn2learn's pickles on Zenodo record 7978538): no published pin was found (none
  in learn2learn, which downloads without verifying, nor in other loaders). The pins are ``None``;
  the comment on ``SOURCES["miniimagenet"]`` says how to obtain them. Until then the downloader
  accepts these files only when a mirror's ``SHA256SUMS`` vouches for them or
  ``allow_unpinned=True`` is passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name on disk (and on a mirror), where it lives, and its pins."""

    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the official bytes can be verified without help from a mirror."""
        return self.md5 is not None or self.sha256 is not None


_JESTER = "https://eigentaste.berkeley.edu/dataset/archive"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_OMNIGLOT = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
_ZENODO = "https://zenodo.org/record/7978538/files"

_JESTER_SHA256 = (
    "cb7841756ded125b15f3d95c9f8241224065e96354c132a46ae4214deeab7615",
    "4d312fd824d8c8cb2c9c952a7b1fb7c00d1f5fd3ece370f7285aa701d371748b",
    "7f548d3762d3506cf7cd37d8cb9e3adb67984a7da7aa2d2096d5e0b1b884758d",
)

SOURCES: dict[str, list[RemoteFile]] = {
    "jester": [
        RemoteFile(f"jester_dataset_1_{i}.zip", f"{_JESTER}/jester_dataset_1_{i}.zip", None, sha)
        for i, sha in enumerate(_JESTER_SHA256, start=1)
    ],
    "movielens100k": [
        RemoteFile("ml-100k.zip", f"{_GROUPLENS}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    ],
    "movielens1m": [
        RemoteFile("ml-1m.zip", f"{_GROUPLENS}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    ],
    "omniglot": [
        RemoteFile(
            "images_background.zip",
            f"{_OMNIGLOT}/images_background.zip",
            "68d2efa1b9178cc56df9314c21c6e718",
        ),
        RemoteFile(
            "images_evaluation.zip",
            f"{_OMNIGLOT}/images_evaluation.zip",
            "6b91aef0f799c5bb55b94e3f2daec811",
        ),
    ],
    # Unpinned: no published checksum was found for these three pickles. To pin them, fetch
    # https://zenodo.org/api/records/7978538 on a networked machine, read files[].checksum
    # ("md5:...") for each mini-imagenet-cache-*.pkl and set md5 here (ideally also the sha256 of
    # a download that matched that md5).
    "miniimagenet": [
        RemoteFile(f"mini-imagenet-cache-{split}.pkl", f"{_ZENODO}/mini-imagenet-cache-{split}.pkl")
        for split in ("train", "validation", "test")
    ],
}

JESTER_PARTS = (1, 2, 3)


def files_for(dataset: str, parts: Sequence[int] | None = None) -> list[RemoteFile]:
    """The files to fetch for ``dataset``; for Jester only the requested ``parts`` (1..3).

    Jester dataset 1 ships as three independent user slices, so a run may need only part 1.
    ``parts`` is refused for the other datasets rather than ignored, so a typo cannot silently
    fetch more (or other) data than intended.
    """
    if dataset not in SOURCES:
        valid = ", ".join(sorted(SOURCES))
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {valid}")
    files = list(SOURCES[dataset])
    if parts is None:
        return files
    if dataset != "jester":
        raise ValueError(f"parts only applies to 'jester', not {dataset!r}; pass parts=None")
    return [files[i - 1] for i in _check_parts(parts)]


def _check_parts(parts: Sequence[int]) -> list[int]:
    bad = [p for p in parts if p not in JESTER_PARTS]
    if bad or not parts:
        raise ValueError(f"jester parts must be a non-empty subset of {JESTER_PARTS}, got {parts}")
    return sorted(set(parts))
