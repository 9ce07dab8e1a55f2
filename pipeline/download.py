"""Stage download@<dataset>: the dataset's official files, verified, under data/raw/<dataset>/.

METALEARN_DATA_MIRROR=../shared/datasets python pipeline/download.py dataset=movielens100k
"""

import sys
from pathlib import Path

# This checkout's code, not an installed copy's: a queued or temporary experiment
# (dvc exp run --queue/--temp) runs in a copy under .dvc/tmp and must run that copy's code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metalearn.stages.cli import exit_now, main
from metalearn.stages.download import STAGE

if __name__ == "__main__":
    exit_now(main(STAGE, sys.argv[1:], __doc__))
