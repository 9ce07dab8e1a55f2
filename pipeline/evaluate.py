"""Stage evaluate@<learner>-<benchmark>: meta-test over the benchmark's fixed tasks.

python pipeline/evaluate.py learner=imaml benchmark=cosmixture-shot50 [eval.steps=10 ...]
"""

import sys

from metalearn.stages import main, run_evaluate

if __name__ == "__main__":
    sys.exit(main(run_evaluate, ["learner", "benchmark"], sys.argv[1:]))
