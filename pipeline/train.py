"""Stage train@<learner>-<benchmark>: meta-train one learner on one benchmark (one MLflow run).

python pipeline/train.py learner=imaml benchmark=cosmixture-shot50 [algo.steps=100 ...]
"""

import sys

from metalearn.stages import main, run_train

if __name__ == "__main__":
    sys.exit(main(run_train, ["learner", "benchmark"], sys.argv[1:]))
