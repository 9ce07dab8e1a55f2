"""Render ``dvc plots diff`` to a PNG, offline: DVC's own Vega-Lite spec, drawn by vl-convert
(``dvc plots diff`` writes HTML that loads Vega from a CDN, which a closed network cannot reach).

    python benchmarks/plots_diff_png.py HEAD steps100 \\
        --target results/curves/maml-cosmixture-shot50.csv -y meta_val_nrmse -o diff.png

Run it in the repository whose experiments it compares (docs/experiments.md shows the example
image, docs/plots-diff.png).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import vl_convert


def vega_lite(revisions: list[str], target: str, x: str, y: str) -> dict:
    """The Vega-Lite spec ``dvc plots diff -x x -y y --template sparse_linear`` draws for
    ``target``, its data inline (the template leaves out the rows that have no ``y``)."""
    cmd = ["dvc", "plots", "diff", *revisions, "--targets", target, "-x", x, "-y", y]
    cmd += ["--template", "sparse_linear", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # a revision or target DVC does not know: its own one line
        raise SystemExit(f"dvc plots diff: {done.stderr.strip() or done.stdout.strip()}")
    shown = json.loads(done.stdout)
    if shown.get("errors"):
        raise SystemExit(f"dvc plots diff: {shown['errors']}")
    (plot,) = shown["data"][target]
    return plot["content"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="+", help="git revisions or experiment names")
    parser.add_argument("--target", required=True, help="a curves CSV under results/curves/")
    parser.add_argument("-x", default="iteration", help="its x column (default: iteration)")
    parser.add_argument("-y", required=True, help="its column to plot, e.g. meta_val_nrmse")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    spec = vega_lite(args.revisions, args.target, args.x, args.y)
    args.out.write_bytes(vl_convert.vegalite_to_png(vl_spec=spec, scale=2))
    print(f"{args.out}: {args.target} ({args.y}) at {', '.join(args.revisions)}")


if __name__ == "__main__":
    main()
