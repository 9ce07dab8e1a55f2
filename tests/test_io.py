"""A stage's outputs, committed together (metalearn.io.Outputs): all or nothing."""

import pytest

from metalearn.io import Outputs


def write(tmp_path, text: str) -> Outputs:
    out = Outputs()
    out.file(tmp_path / "model.pt").write_text(text)
    folder = out.folder(tmp_path / "per_task")
    (folder / "a.parquet").write_text(text)
    out.write_json(tmp_path / "metrics.json", {"text": text})
    return out


def state(tmp_path) -> dict[str, str]:
    return {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}


def test_outputs_appear_together_and_replace_the_earlier_ones(tmp_path):
    with write(tmp_path, "old") as out:
        out.commit()
    with write(tmp_path, "new") as out:
        placed = state(tmp_path)
        assert (placed["model.pt"], placed["per_task/a.parquet"]) == ("old", "old")  # not yet
        out.commit()
    assert state(tmp_path) == {
        "model.pt": "new",
        "per_task/a.parquet": "new",
        "metrics.json": '{\n  "text": "new"\n}\n',
    }


@pytest.mark.parametrize("commit", [False, True])
def test_a_failure_before_or_after_the_commit_leaves_the_earlier_outputs(tmp_path, commit):
    with write(tmp_path, "old") as out:
        out.commit()
    before = state(tmp_path)
    with pytest.raises(RuntimeError), write(tmp_path, "new") as out:
        if commit:
            out.commit()  # then the MLflow run cannot be closed, say
        raise RuntimeError("the stage failed")
    assert state(tmp_path) == before  # no scratch file or folder left either


def test_a_failure_with_no_earlier_outputs_leaves_none(tmp_path):
    with pytest.raises(RuntimeError), write(tmp_path, "new") as out:
        out.commit()
        raise RuntimeError("the run cannot be closed")
    assert list(tmp_path.iterdir()) == []
