"""Stage download@<dataset>: the dataset's official files, verified, under data/raw/<dataset>/.

METALEARN_DATA_MIRROR=../shared/datasets python pipeline/download.py dataset=movielens100k
"""

import sys

from metalearn.stages import main, run_download

if __name__ == "__main__":
    sys.exit(main(run_download, ["dataset"], sys.argv[1:]))
