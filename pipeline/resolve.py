"""Stage resolve: validate all of params.yaml and write configs/, one resolved spec per cell.

python pipeline/resolve.py

Every train, evaluate and tune stage depends on its own spec (configs/<stage>/<cell>.json), so
DVC re-runs only the cells whose values change (docs/parameters.md).
"""

import sys
from pathlib import Path

# This checkout's code, not an installed copy's: a queued or temporary experiment
# (dvc exp run --queue/--temp) runs in a copy under .dvc/tmp and must run that copy's code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metalearn.stages.cli import exit_now, main
from metalearn.stages.resolve import STAGE

if __name__ == "__main__":
    exit_now(main(STAGE, sys.argv[1:], __doc__))
