"""Run the stale stages of the pipeline, up to N at once, scheduled by Ray.

    python -m metalearn.run --jobs 4 [targets ...]        # make repro JOBS=4

Targets are what ``dvc repro`` takes (a stage, ``tuning/dvc.yaml``; default ``dvc.yaml``). Each
stage is still a DVC stage: the runner starts it when every stage upstream of it is done and
``dvc status`` finds it stale, and DVC records it in ``dvc.lock`` when it finishes, so the
outcome is a sequential ``dvc repro``'s. Ray starts a local instance on this machine, or joins
the cluster ``RAY_ADDRESS`` names; a train or evaluate stage gets a GPU of its own where there
are GPUs (docs/scale.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from metalearn.errors import InterruptedStage, StageError
from metalearn.run.runner import run_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metalearn.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("targets", nargs="*", help="stages or dvc.yaml files (default: dvc.yaml)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="stages at once at most")
    parser.add_argument(
        "--gpus", type=int, help="GPUs the local Ray instance declares (default: those it finds)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, not {args.jobs}")
    if args.gpus is not None and args.gpus < 0:
        parser.error(f"--gpus must be 0 or more, not {args.gpus}")
    try:
        outcome = run_pipeline(Path.cwd(), args.targets, args.jobs, args.gpus)
    except InterruptedStage as stopped:
        name = signal.Signals(stopped.signum).name
        print(f"error: stopped by {name}: the running stages "
              "were stopped and left no output; finished ones are in dvc.lock, and a rerun goes "
              "on with what is still stale", file=sys.stderr)  # fmt: skip
        return 128 + stopped.signum
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    ran, fresh = len(outcome.ran), outcome.up_to_date
    print(f"{ran} stages ran, {fresh} were up to date, in {outcome.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
