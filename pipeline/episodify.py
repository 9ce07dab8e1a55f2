"""Stage episodify@<benchmark>: the benchmark's fixed meta-val/meta-test tasks and what
meta-training samples from, under data/episodes/<benchmark>/.

    python pipeline/episodify.py benchmark=cosmixture-shot50 [data.cosmixture.seed=1 ...]
"""

import sys

from metalearn.stages import main, run_episodify

if __name__ == "__main__":
    sys.exit(main(run_episodify, ["benchmark"], sys.argv[1:]))
