"""The diagnostics command: a trained learner scored on every split at several step counts."""

from metalearn.config import load_config
from metalearn.diagnostics import main
from metalearn.spec import train_cell
from metalearn.stages import train as train_stage
from tests.tiny import TINY


def test_diagnostics_score_every_split_at_every_step_count(make_workdir, capsys):
    make_workdir(TINY)
    train_stage.run(train_cell(load_config(TINY), "maml", "cosmixture-shot50"))
    assert main(["maml", "cosmixture-shot50", "--steps", "1", "4", "--tasks", "3", *TINY]) == 0
    table = capsys.readouterr().out
    for split in ("meta-train", "meta-val", "meta-test"):
        assert f"| {split} | 1 | 3 |" in table and f"| {split} | 4 | 3 |" in table
    assert main(["imaml", "cosmixture-shot50", *TINY]) == 1  # not trained: says which stage
    assert "run train@imaml-cosmixture-shot50" in capsys.readouterr().err
