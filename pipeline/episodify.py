"""Stage episodify@<benchmark>: the benchmark's fixed meta-val/meta-test tasks and what
meta-training samples from, under data/episodes/<benchmark>/.

    python pipeline/episodify.py benchmark=cosmixture-shot50 [data.cosmixture.seed=1 ...]
"""

import sys
from pathlib import Path

# This checkout's code, not an installed copy's: a queued or temporary experiment
# (dvc exp run --queue/--temp) runs in a copy under .dvc/tmp and must run that copy's code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metalearn.stages.cli import exit_now, main
from metalearn.stages.episodify import STAGE

if __name__ == "__main__":
    exit_now(main(STAGE, sys.argv[1:], __doc__))
