"""Stage code: write code/<script>.json for every stage script, the sha256 of each file it runs.

python pipeline/code.py

Every other stage depends on its script's manifest instead of listing modules, which keeps
dvc.lock small (DVC rewrites it after each stage) and the re-run rules exact: an edit re-runs
only the stages whose scripts run the edited file (src/metalearn/code_manifest.py).
"""

import sys
from pathlib import Path

# This checkout's code, not an installed copy's (see pipeline/resolve.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metalearn.code_manifest import write_manifests

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    if sys.argv[1:]:
        print(__doc__)
        sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)
    try:
        counts = write_manifests(ROOT)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(", ".join(f"{stage}={files} files" for stage, files in counts.items()))
