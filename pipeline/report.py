"""Stage report: results/summary.json (metrics), results/summary.md and results/plots/.

python pipeline/report.py
"""

import sys

from metalearn.stages import main, run_report

if __name__ == "__main__":
    sys.exit(main(run_report, [], sys.argv[1:]))
