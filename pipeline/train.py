"""Stage train@<learner>-<benchmark>: meta-train one learner on one benchmark (one MLflow run).

python pipeline/train.py learner=imaml benchmark=cosmixture-shot50 [algo.steps=100 ...]
"""

import sys
from pathlib import Path

# This checkout's code, not an installed copy's: a queued or temporary experiment
# (dvc exp run --queue/--temp) runs in a copy under .dvc/tmp and must run that copy's code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metalearn import tracking_process

if __name__ == "__main__":  # MLflow loads in its side process while this one imports torch
    tracking_process.start_early()

from metalearn.stages.cli import exit_now, main  # noqa: E402
from metalearn.stages.train import STAGE  # noqa: E402

if __name__ == "__main__":
    exit_now(main(STAGE, sys.argv[1:], __doc__))
