"""The prepared GPU check: what only a GPU can tell, in one command of under 8 minutes.

    benchmarks/gpu_check.sh [OUT]          # on a CUDA machine; figures into OUT (results/gpu)
    benchmarks/gpu_check.sh --dry [OUT]    # on a CPU: tiny sizes, the same code path (the tests)

1. The CUDA-marked tests (``pytest -m cuda``: a short train and evaluate of every learner on the
   GPU) and the CUDA comparisons of the algorithm tests.
2. The Adjoint MAML paper's time/memory figure: one batched meta-gradient of MAML and the Adjoint
   variants at K = 1 ... 500 on the CF MLP (16 tasks), peak memory from
   ``torch.cuda.max_memory_allocated`` (exact tensor bytes; the paper claims Adjoint MAML's is
   flat in K), through the efficiency stage's point runner (``time_memory.csv``,
   ``time_memory.png``).
3. Three minutes of Omniglot 5-way 1-shot meta-training at the paper's protocol shapes (Conv4,
   64 filters, meta-batch 32, MAML K = 1, α = 0.4; seeded synthetic images of Omniglot's shape,
   since the device copy carries no dataset): iterations per second, eager and compiled
   (``throughput.json``).

Everything lands in OUT, with ``summary.json`` (device, torch version, each part's outcome).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {
    "maml": {"learner": "maml"},
    "adjoint-heun-store": {"learner": "adjoint", "scheme": "heun", "trajectory": "store"},
    "adjoint-heun-checkpoint": {"learner": "adjoint", "scheme": "heun", "trajectory": "checkpoint"},
    "adjoint-heun-reverse": {"learner": "adjoint", "scheme": "heun", "trajectory": "reverse"},
    "adjoint-euler-reverse": {"learner": "adjoint", "scheme": "euler", "trajectory": "reverse"},
}
# The K sweep on the CF MLP (the paper's figure; 35 points in fresh processes, about 3 min on a
# GPU), then 3 min of training: with the tests, under 8 min. --dry: seconds, eager only (a
# compile of the Conv4 takes a minute on a CPU).
FULL = {"steps": [1, 10, 20, 50, 100, 200, 500], "meta_batch": {"cf_mlp": 16},
        "point_seconds": 15, "train_seconds": 180, "train_meta_batch": 32,
        "forms": ("eager", "compiled")}  # fmt: skip
DRY = {"steps": [1, 2], "meta_batch": {"cf_mlp": 2}, "point_seconds": 60, "train_seconds": 2,
       "train_meta_batch": 2, "forms": ("eager",)}  # fmt: skip


def cuda_tests(out: Path, device: str) -> dict:
    if device != "cuda":
        return {"status": "skipped (no GPU: --dry)"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
         "tests/test_devices.py", "tests/algorithms/test_mlp.py::test_cuda_matches_cpu"],
        capture_output=True, text=True,
    )  # fmt: skip
    (out / "cuda_tests.txt").write_text(done.stdout + done.stderr)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return {"status": "passed" if done.returncode == 0 else "failed", "summary": last}


def time_memory(out: Path, device: str, sizes: dict) -> dict:
    import polars as pl

    from metalearn.efficiency import plot_time_memory, sweep

    rows = sweep(sizes["meta_batch"], VARIANTS, sizes["steps"], sizes["point_seconds"],
                 device=device, repeats=1)  # fmt: skip
    pl.DataFrame(rows).write_csv(out / "time_memory.csv")
    plot_time_memory(rows, out / "time_memory.png")
    ok = [r for r in rows if r["status"] == "ok"]
    return {"points": len(rows), "ok": len(ok)}


def throughput(out: Path, device: str, sizes: dict) -> dict:
    from metalearn.algorithms import make
    from metalearn.efficiency import make_problem
    from metalearn.training import Adam

    problem = make_problem("omniglot_conv4", sizes["train_meta_batch"], device=device)
    learner = make("maml", steps=1, inner_lr=0.4)
    found = {"meta_batch": sizes["train_meta_batch"], "steps": 1, "device": device}
    eager = learner.batched_meta_grad_and_loss
    forms = {name: eager if name == "eager" else torch.compile(eager) for name in sizes["forms"]}
    for name, meta_grad in forms.items():
        params = {k: v.clone() for k, v in problem.params.items()}
        optimizer = Adam(params, lr=1e-3)
        start = time.perf_counter()
        meta_grad(problem.loss_fn, params, problem.support, problem.query)  # compiles, if so
        first = time.perf_counter() - start
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < sizes["train_seconds"] / len(forms):
            grads, _ = meta_grad(problem.loss_fn, params, problem.support, problem.query)
            optimizer.step(params, grads)
            calls += 1
        if device == "cuda":
            torch.cuda.synchronize()
        rate = calls / (time.perf_counter() - start)
        found[name] = {"iterations_per_s": rate, "first_call_s": first}
        print(f"Omniglot 5-way 1-shot, meta-batch {found['meta_batch']}, {name}: "
              f"{rate:.2f} iterations/s", flush=True)  # fmt: skip
    (out / "throughput.json").write_text(json.dumps(found, indent=1) + "\n")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="results/gpu")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes, the same path")
    args = parser.parse_args()
    if not args.dry and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU is visible; run with --dry for the CPU rehearsal")
    device, sizes = ("cpu", DRY) if args.dry else ("cuda", FULL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    for name, part in (("cuda_tests", lambda: cuda_tests(out, device)),
                       ("time_memory", lambda: time_memory(out, device, sizes)),
                       ("throughput", lambda: throughput(out, device, sizes))):  # fmt: skip
        start = time.perf_counter()
        summary[name] = {**part(), "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: {summary[name]}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
