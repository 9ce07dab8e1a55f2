"""Digests of what a stage wrote, and the one-line refusal of a file changed since."""

import polars as pl
import pytest
import torch

from metalearn.checkpoint import content_digest
from metalearn.errors import DataError
from metalearn.fingerprint import fingerprint, fingerprints, verify

FIX = "restore it: dvc checkout x, or re-create it: dvc repro -f stage@x"


def test_a_file_as_written_passes_and_each_change_is_named(tmp_path):
    table = tmp_path / "test.parquet"
    pl.DataFrame({"task": range(5)}).write_parquet(table)
    (tmp_path / "notes.txt").write_text("a")
    records = fingerprints(tmp_path)
    assert records[table.name]["rows"] == 5 and "rows" not in records["notes.txt"]
    files = {tmp_path / name: r for name, r in records.items()}
    verify(files, "stage@x", FIX)

    pl.DataFrame({"task": range(3)}).write_parquet(table)
    with pytest.raises(DataError, match=r"test.parquet has been changed since stage@x wrote it "
                       r"\(3 rows, not 5\); restore it: dvc checkout x"):  # fmt: skip
        verify(files, "stage@x", FIX)
    pl.DataFrame({"task": range(5, 10)}).write_parquet(table)  # same rows, other values
    with pytest.raises(DataError, match=r"wrote it \(other bytes\)"):
        verify(files, "stage@x", FIX)
    table.write_bytes(b"PAR1")  # not a table any more
    with pytest.raises(DataError, match=r"\(unreadable rows, not 5\)"):
        verify(files, "stage@x", FIX)
    table.unlink()
    with pytest.raises(DataError, match=r"test.parquet is missing; restore it"):
        verify(files, "stage@x", FIX)
    with pytest.raises(DataError, match=r"notes.txt was written by an older version"):
        verify({tmp_path / "notes.txt": None}, "stage@x", FIX)
    assert fingerprint(tmp_path / "notes.txt") == records["notes.txt"]


def test_a_checkpoint_digest_survives_the_file_and_sees_one_changed_weight(tmp_path):
    content = {
        "params": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(0.5)},
        "seed_params": [{"w": torch.ones(2)}],
        "fitted": {"inner_lr": 0.01},
        "seeds": [0],
    }
    digest = content_digest(content)
    torch.save(content, tmp_path / "model.pt")
    assert content_digest(torch.load(tmp_path / "model.pt", weights_only=True)) == digest
    content["seed_params"][0]["w"][1] = 1.0 + 1e-7
    assert content_digest(content) != digest
    as_double = {**content, "params": {k: v.double() for k, v in content["params"].items()}}
    assert content_digest(as_double) != content_digest(content)  # the dtype counts
